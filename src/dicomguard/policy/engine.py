"""Cedar policy engine: every authorization decision of the archive (ADR 0003).

Policies are Cedar files an administrator can read, edit and test
(``HOME/policies/*.cedar``; the shipped defaults are in ``policy/defaults``).
They are validated against :file:`schema.cedarschema` when loaded: a file that
does not parse, does not type-check, or reuses a policy id raises
:class:`PolicyError` and the archive refuses to start. It never falls back to
a more permissive set.

Decisions are Cedar's: default deny, a ``forbid`` overrides every ``permit``.
One thing is stricter than Cedar: a policy whose evaluation *errors* is
skipped by Cedar, which would silently drop a ``forbid``; here any evaluation
error denies the request (fail closed).

One guard comes before the policies: a scoped API token (``dicomguard token
create --scope store``) can be used only for its scopes, whatever its user's
roles and the policies permit; no policy edit can widen it.

Two annotations give a policy a meaning beyond permit/forbid:

* ``@step_up("true")`` on a ``forbid``: the refusal means "confirm your
  identity again" (a fresh TOTP, RFC 9470), not "never".
* ``@break_glass("true")`` on a ``permit``: access it grants is emergency
  access, marked in every audit event (EventTypeCode BTG).

Administration actions (``account-create``, ``device-revoke`` ...) are members
of the action group ``administer``: ``action in Action::"administer"`` matches
them all, ``action == Action::"account-create"`` one of them.

Every request is evaluated; a single request with exactly the inputs (entities,
request, context with its time in seconds) of one evaluated lately gets that
evaluation's answer again (ADR 0003, amended): Cedar's answer is a function of
the policy set, the schema and those inputs alone, and an engine holds one
policy set for its lifetime (a reload builds a new engine).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

import cedarpy

from dicomguard.core.access import (
    ADMINISTRATION,
    Action,
    Decision,
    Principal,
    PrincipalKind,
    RequestContext,
    Resource,
    normalize_department,
)
from dicomguard.core.study_scope import EVERYTHING, NOTHING, StudyScope
from dicomguard.errors import ConfigurationError
from dicomguard.policy.scope import scope_of_residuals

log = logging.getLogger(__name__)

POLICY_SUFFIX = ".cedar"
RECENT_ANSWERS = 256
"""Single-request answers an engine remembers (each one second's question of one principal, at most a few KB), and as
many search scopes."""
_Answer = TypeVar("_Answer")


class PolicyError(ConfigurationError):
    """A policy file is invalid: the archive does not start with it (never falls open)."""


@dataclass(frozen=True)
class LoadedPolicy:
    id: str
    file: str
    effect: str
    annotations: dict[str, str]

    @property
    def step_up(self) -> bool:
        return self.annotations.get("step_up") == "true"

    @property
    def break_glass(self) -> bool:
        return self.annotations.get("break_glass") == "true"

    @property
    def deidentify(self) -> bool:
        return self.annotations.get("deidentify") == "true"


def schema_text() -> str:
    return resources.files("dicomguard.policy").joinpath("schema.cedarschema").read_text(encoding="utf-8")


def default_policy_files() -> dict[str, str]:
    """The shipped default policies, by file name."""
    folder = resources.files("dicomguard.policy").joinpath("defaults")
    return {f.name: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(POLICY_SUFFIX)}


def install_default_policies(directory: Path) -> None:
    """Write the shipped defaults into ``directory`` (``init``; never overwrites an existing file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in default_policy_files().items():
        target = directory / name
        if not target.exists():
            target.write_text(text, encoding="utf-8")


class PolicyEngine:
    """A validated, parsed Cedar policy set and schema; decisions in microseconds."""

    def __init__(self, files: dict[str, str]) -> None:
        if not files:
            raise PolicyError("no policy files: with no policy nothing would be permitted; refusing to start")
        self._schema = cedarpy.Schema.from_str(schema_text())
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\x00" + files[name].encode() + b"\x00")
        self.fingerprint = digest.hexdigest()
        """SHA-256 over the file names and texts: names the exact policy set in audit messages."""
        self.files = len(files)
        combined: dict[str, object] = {}
        self.policies: dict[str, LoadedPolicy] = {}
        for name in sorted(files):
            for policy_id, policy in self._parse_file(name, files[name]):
                if policy_id in self.policies:
                    raise PolicyError(f"{name}: policy id {policy_id!r} is already used in {self.policies[policy_id].file}")
                annotations = {k: str(v) for k, v in (policy.get("annotations") or {}).items()}
                self.policies[policy_id] = LoadedPolicy(policy_id, name, str(policy["effect"]), annotations)
                combined[policy_id] = policy
        self._policy_set = cedarpy.PolicySet.from_json_str(json.dumps({"staticPolicies": combined, "templates": {}, "templateLinks": []}))
        self._answers: _Recent[list[cedarpy.AuthzResult]] = _Recent()
        self._scopes: _Recent[StudyScope] = _Recent()

    def _parse_file(self, name: str, text: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
        try:
            parsed = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise PolicyError(f"{name}: does not parse: {exc}") from None
        result = cedarpy.validate_policies(text, self._schema)
        if not result.validation_passed:
            ids = result.id_annotations_by_policy_id or {}
            problems = "; ".join(f"{ids.get(e.policy_id, e.policy_id)}: {e.error}" for e in result.errors)
            raise PolicyError(f"{name}: does not validate against the schema: {problems}")
        out = []
        stem = name.removesuffix(POLICY_SUFFIX)
        # Cedar numbers policies policy0, policy1, ... in file order.
        statics = parsed.get("staticPolicies", {})
        for n in range(len(statics)):
            policy = statics[f"policy{n}"]
            policy_id = (policy.get("annotations") or {}).get("id") or f"{stem}#{n}"
            out.append((policy_id, policy))
        if parsed.get("templates"):
            raise PolicyError(f"{name}: policy templates are not supported; write static policies")
        return out

    @classmethod
    def load(cls, directory: Path) -> PolicyEngine:
        """Load and validate every ``*.cedar`` file of ``directory``; raises :class:`PolicyError`."""
        if not directory.is_dir():
            raise PolicyError(f"policy directory {directory} does not exist")
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob(f"*{POLICY_SUFFIX}"))}
        if not files:
            raise PolicyError(f"no {POLICY_SUFFIX} files in {directory}: refusing to start with no policy")
        engine = cls(files)
        log.info("loaded %d policies from %d files in %s", len(engine.policies), len(files), directory)
        return engine

    @classmethod
    def defaults(cls) -> PolicyEngine:
        return cls(default_policy_files())

    # -- decisions ---------------------------------------------------------------------

    def decide(self, principal: Principal, action: Action, resource: Resource, context: RequestContext | None = None) -> Decision:
        (decision,) = self.decide_many(principal, action, [resource], context)
        return decision

    def decide_many(
        self, principal: Principal, action: Action, resources: Sequence[Resource], context: RequestContext | None = None
    ) -> list[Decision]:
        """One decision per resource (one Cedar batch call)."""
        if not resources:
            return []
        context = context or RequestContext.now_for(principal)
        scopes = principal.attributes.get("token_scopes")
        if scopes is not None and not _in_scope(action, scopes):  # type: ignore[arg-type]
            # Built in, before any policy: no policy edit can widen a scoped token.
            return [Decision(False, f"the API token is limited to {', '.join(scopes) or 'nothing'}", ("token-scope",))  # type: ignore[arg-type]
                    for _ in resources]
        p_entity = principal_entity(principal)
        entities = [p_entity]
        requests = []
        refused: dict[int, Decision] = {}
        seen: set[tuple[str, str]] = {(p_entity["uid"]["type"], p_entity["uid"]["id"])}  # type: ignore[index]
        for i, res in enumerate(resources):
            r_entity = resource_entity(res)
            if r_entity is None:
                refused[i] = Decision(False, f"the archive knows no access attributes of this {res.kind}: denied")
                continue
            key = (r_entity["uid"]["type"], r_entity["uid"]["id"])
            if key not in seen:
                seen.add(key)
                entities.append(r_entity)
            requests.append((i, {
                "principal": p_entity["uid"], "action": {"type": "Action", "id": action.value},
                "resource": r_entity["uid"], "context": context.to_cedar(),
            }))
        results = self._evaluate([r for _, r in requests], entities) if requests else []
        decisions = dict(refused)
        retry: list[tuple[int, dict[str, object]]] = []
        for (i, request), result in zip(requests, results, strict=True):
            decisions[i] = self._decision(result)
            if decisions[i].step_up:
                retry.append((i, {**request, "context": {**request["context"], "mfa_age": 0}}))  # type: ignore[dict-item]
        if retry:
            # Step-up is offered only if a fresh MFA confirmation would actually permit the request.
            confirmed = self._evaluate([r for _, r in retry], entities)
            for (i, _), result in zip(retry, confirmed, strict=True):
                if not result.allowed or result.diagnostics.errors:
                    decisions[i] = replace(decisions[i], step_up=False)
        deid = [(i, {**r, "context": {**r["context"], "deidentified": True}}) for i, r in requests  # type: ignore[dict-item]
                if not decisions[i].allowed and decisions[i].deidentify]
        if deid:
            # "De-identify it" is offered only if the same request for a de-identified copy would be permitted
            # (perhaps after a step-up).
            again = self._evaluate([r for _, r in deid], entities)
            for (i, _), result in zip(deid, again, strict=True):
                later = self._decision(result)
                if not (later.allowed or later.step_up) or result.diagnostics.errors:
                    decisions[i] = replace(decisions[i], deidentify=False)
        return [decisions[i] for i in range(len(resources))]

    def _evaluate(self, requests: list[dict[str, object]], entities: list[dict[str, object]]) -> list[cedarpy.AuthzResult]:
        """Cedar's answers to ``requests``. A single request whose inputs are, as JSON, exactly those of one of the last
        :data:`RECENT_ANSWERS` single requests gets that answer again (its time is in the context, to the second: a
        device storing a series asks the same question for each object). Batches, whose inputs rarely repeat, are
        always evaluated. The answers are only read."""
        if len(requests) != 1:
            return cedarpy.is_authorized_batch(requests, self._policy_set, entities, self._schema)
        key = json.dumps([requests, entities], separators=(",", ":"))
        answer = self._answers.get(key)
        if answer is None:
            answer = cedarpy.is_authorized_batch(requests, self._policy_set, entities, self._schema)
            self._answers.put(key, answer)
        return answer

    def study_scope(self, principal: Principal, action: Action, context: RequestContext | None = None) -> StudyScope:
        """The studies ``principal`` might be permitted ``action`` on, as far as the policies tell without looking at
        any study (Cedar partial evaluation with the resource unknown; ADR 0019): at least every permitted study, so
        a search may read only these. Never a decision: each study found is still decided with :meth:`decide_many`.
        Anything the evaluation cannot narrow (an error, an unexpected answer) is :data:`EVERYTHING`."""
        context = context or RequestContext.now_for(principal)
        scopes = principal.attributes.get("token_scopes")
        if scopes is not None and not _in_scope(action, scopes):  # type: ignore[arg-type]
            return NOTHING
        p_entity = principal_entity(principal)
        uid = p_entity["uid"]
        request = {"principal": f'{uid["type"]}::{json.dumps(uid["id"])}', "action": f"Action::{json.dumps(action.value)}",  # type: ignore[index]
                   "context": context.to_cedar()}
        # The same inputs, as JSON, as one of the last RECENT_ANSWERS scopes (its time in the context, to the second:
        # a client paging or searching again asks the same): that scope again. Scopes are immutable.
        key = json.dumps([request, p_entity], separators=(",", ":"))
        known = self._scopes.get(key)
        if known is not None:
            return known
        try:
            result = cedarpy.is_authorized_partial(request, self._policy_set, [p_entity], self._schema)
            scope = scope_of_residuals(result.decision.value, list(result.diagnostics.reasons), list(result.diagnostics.errors),
                                       dict(result.residuals), {pid: p.effect for pid, p in self.policies.items()})
            self._scopes.put(key, scope)
            return scope
        except Exception:  # an experimental upstream feature: whatever it does, searches stay correct, only wider
            log.warning("partial evaluation of the policies failed; searches read every candidate", exc_info=True)
            return EVERYTHING

    def _decision(self, result: cedarpy.AuthzResult) -> Decision:
        diagnostics = result.diagnostics
        reasons = tuple(sorted(diagnostics.reasons))
        errors = list(diagnostics.errors)
        if errors:
            # Cedar skips an erroring policy; a skipped forbid must not become a permit.
            return Decision(False, "policy evaluation error (denied): " + "; ".join(str(e) for e in errors)[:300], reasons)
        policies = [self.policies[r] for r in reasons if r in self.policies]
        if result.allowed:
            return Decision(True, "permitted by " + ", ".join(reasons), reasons, break_glass=any(p.break_glass for p in policies))
        if not reasons:
            return Decision(False, "no policy permits it (default deny)", ())
        step_up = bool(policies) and all(p.step_up for p in policies)  # confirmed by a re-run with a fresh MFA
        # "De-identify it" (perhaps then with a step-up) when only such guards forbid: confirmed by a re-run for a copy.
        deidentify = any(p.deidentify for p in policies) and all(p.deidentify or p.step_up for p in policies)
        return Decision(False, "forbidden by " + ", ".join(reasons), reasons, step_up=step_up, deidentify=deidentify)


class _Recent(Generic[_Answer]):
    """The last :data:`RECENT_ANSWERS` answers of one engine by the JSON of their inputs (thread-safe); an answer is
    only ever read, so one may be handed to several callers."""

    def __init__(self) -> None:
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> _Answer | None:
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: str, answer: _Answer) -> None:
        with self._lock:
            self._answers[key] = answer
            if len(self._answers) > RECENT_ANSWERS:
                self._answers.popitem(last=False)


def _in_scope(action: Action, scopes: Sequence[str]) -> bool:
    """A scoped token may use its scopes; the scope ``administer`` covers every administration action."""
    return action.value in scopes or (action in ADMINISTRATION and Action.ADMINISTER.value in scopes)


# -- entities -----------------------------------------------------------------------


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]  # type: ignore[attr-defined]


def _department(value: object) -> str:
    """Departments of principals and studies compare in one canonical form, however they were stored."""
    return normalize_department(str(value)[:256])[:64] if value else ""


def principal_entity(p: Principal) -> dict[str, object]:
    a = p.attributes
    if p.kind is PrincipalKind.OPERATOR:
        return {"uid": {"type": "Operator", "id": p.name}, "attrs": {}, "parents": []}
    if p.kind is PrincipalKind.DEVICE:
        return {"uid": {"type": "Device", "id": p.name}, "parents": [], "attrs": {
            "operations": _strings(a.get("operations")), "department": _department(a.get("department")),
        }}
    if p.kind is PrincipalKind.SHARE:
        return {"uid": {"type": "Share", "id": p.name}, "parents": [], "attrs": {
            "studies": _strings(a.get("studies")), "download": bool(a.get("download")), "deidentified": bool(a.get("deidentified")),
        }}
    return {"uid": {"type": "User", "id": p.name}, "parents": [], "attrs": {
        "name": p.name,
        "roles": sorted(p.roles),
        "department": _department(a.get("department")),
        "site": str(a.get("site") or ""),
        "modalities": _strings(a.get("modalities")),
        "referring_token": str(a.get("referring_token") or ""),
        "clearances": _strings(a.get("clearances")),
    }}


_SIMPLE_KINDS = {"archive": "Archive", "audit-log": "AuditLog", "allow-list": "AllowList", "policy-set": "PolicySet",
                 "incident": "Incident"}
_STUDY_KINDS = frozenset({"study", "series", "instance"})


def resource_entity(r: Resource) -> dict[str, object] | None:
    """The Cedar entity of a resource; ``None`` when a study's access attributes are unknown (deny)."""
    if r.kind in _SIMPLE_KINDS:
        return {"uid": {"type": _SIMPLE_KINDS[r.kind], "id": r.uid or r.kind}, "attrs": {}, "parents": []}
    if r.kind == "patient":
        return {"uid": {"type": "Patient", "id": r.patient_ref or r.uid or "*"}, "attrs": {}, "parents": []}
    if r.kind == "account":
        a = r.attributes
        return {"uid": {"type": "Account", "id": r.uid or "*"}, "parents": [], "attrs": {
            "name": str(a.get("name") or r.uid), "roles": _strings(a.get("roles")), "department": _department(a.get("department")),
        }}
    if r.kind == "audit-message":
        a = r.attributes  # claims not stated count as the worst case
        return {"uid": {"type": "AuditMessage", "id": r.uid or "*"}, "parents": [],
                "attrs": {"about_others": bool(a.get("about_others", True)), "as_archive": bool(a.get("as_archive", True))}}
    if r.kind == "share-link":
        return {"uid": {"type": "ShareLink", "id": r.uid or "*"}, "parents": [], "attrs": {"owner": str(r.attributes.get("owner") or "")}}
    if r.kind == "peer":
        return {"uid": {"type": "Peer", "id": r.uid or "*"}, "parents": [], "attrs": {"external": bool(r.attributes.get("external", True))}}
    if r.kind == "device":
        a = r.attributes
        return {"uid": {"type": "Device", "id": r.uid or "*"}, "parents": [], "attrs": {
            "operations": _strings(a.get("operations")), "department": _department(a.get("department")),
        }}
    if r.kind in _STUDY_KINDS and r.access is not None:
        s = r.access
        return {"uid": {"type": "Study", "id": r.study_uid or r.uid}, "parents": [], "attrs": {
            "uid": r.study_uid or r.uid,
            "patient": r.patient_ref,
            "department": _department(s.department),
            "site": s.site,
            "labels": sorted(s.labels),
            "modalities": sorted(s.modalities),
            "referring_token": s.referring_token,
            "stored_at": int(s.stored_at.timestamp()),
        }}
    return None
