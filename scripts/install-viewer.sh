#!/usr/bin/env bash
# Install the OHIF viewer that dicomguard serves at /viewer: the prebuilt static app of the npm
# package @ohif/app, at a pinned version whose tarball digest is checked here (not only by npm).
#
#   scripts/install-viewer.sh [DIRECTORY]
#
# DIRECTORY defaults to $DICOMGUARD_VIEWER_DIR, else ${XDG_DATA_HOME:-$HOME/.local/share}/dicomguard/viewer.
# The directory ends up holding the package's built app (its dist/ folder: index.html and bundles)
# and nothing else. Files the archive never serves are left out: the package's own app-config.js
# (dicomguard generates its own), the service worker and its Workbox CDN import, the Google Cloud
# and OIDC pages/configurations, Netlify/serve rewrite files, the ?customization= data files and
# source maps. Text and WebAssembly files get a gzip copy (<name>.gz) next to them.
# Idempotent: an installation of this version is left as it is; another one is replaced by a
# complete tree renamed into place (restart the archive afterwards: it reads the file set at start).
# Needs node and npm (npm talks to the registry configured for npm). No package script is run.
set -euo pipefail

OHIF_VERSION=3.13.2
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
STAMP=.dicomguard-viewer

dest=${1:-${DICOMGUARD_VIEWER_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/dicomguard/viewer}}
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac
dest=${dest%/}

if [ -f "$dest/$STAMP" ] && [ -f "$dest/index.html" ] \
   && [ "$(cat "$dest/$STAMP")" = "@ohif/app@$OHIF_VERSION $OHIF_INTEGRITY" ]; then
  echo "OHIF viewer @ohif/app@$OHIF_VERSION already installed in $dest"
  exit 0
fi

for tool in node npm tar gzip find xargs; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-viewer: $tool is required" >&2; exit 1; }
done

parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.viewer-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# npm pack fetches the published tarball only (no dependencies, no install scripts).
tarball=$(cd "$work" && npm pack --silent --ignore-scripts "@ohif/app@$OHIF_VERSION")
tarball="$work/$tarball"
actual="sha512-$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")"
if [ "$actual" != "$OHIF_INTEGRITY" ]; then
  echo "install-viewer: @ohif/app@$OHIF_VERSION tarball digest $actual, expected $OHIF_INTEGRITY" >&2
  exit 1
fi

mkdir "$work/unpacked"
tar -xzf "$tarball" -C "$work/unpacked" --no-same-owner --no-same-permissions package/dist
app="$work/unpacked/package/dist"
[ -f "$app/index.html" ] || { echo "install-viewer: no dist/index.html in the package" >&2; exit 1; }

rm -f "$app/app-config.js" "$app/sw.js" "$app/google.js" "$app/silent-refresh.html" "$app/oidc-client.min.js" \
      "$app/serve.json" "$app/_headers" "$app/_redirects"
rm -rf "$app/customizations"
find "$app" -name '*.map' -type f -delete
find "$app" -type l -delete  # the archive serves regular files only
# Pre-compressed copies the archive sends to browsers that accept gzip (the app is ~170 MB uncompressed).
find "$app" -type f \( -name '*.js' -o -name '*.css' -o -name '*.wasm' -o -name '*.json' -o -name '*.svg' \) \
  -size +1k -print0 | xargs -0 -r -n 16 -P "$(nproc 2>/dev/null || echo 2)" gzip -6 -k -n -f
chmod -R u=rwX,go=rX "$app"
echo "@ohif/app@$OHIF_VERSION $OHIF_INTEGRITY" > "$app/$STAMP"

# Swap in the new tree: rename the old one aside, rename the new one in, then remove the old one.
if [ -e "$dest" ]; then
  mv "$dest" "$work/previous"
fi
mv "$app" "$dest"

echo "OHIF viewer @ohif/app@$OHIF_VERSION installed in $dest ($(du -sh "$dest" | cut -f1))"
