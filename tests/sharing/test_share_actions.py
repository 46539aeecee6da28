"""Every share route is one recorded action (or none, where it says so): one ledger leaf binding exactly its audit records."""

from __future__ import annotations

from tests.sharing.conftest import Shared, open_link, recipient, token_of
from tests.test_every_action_recorded import _check_nothing, _check_one_action, _state


def test_each_share_route_is_one_recorded_action(shared: Shared) -> None:
    archive = shared.archive
    token = shared.server.token("dr.ann", "radiologist")
    with shared.server.http(token) as http:
        before = _state(archive)
        created = http.post("/shares", json={"study": shared.alice_study, "to": "Dr. B, second opinion", "recipient": "internal",
                                             "download": True})
        assert created.status_code == 201, created.text
        _check_one_action(archive, before, 1, "POST /shares")
        body = created.json()
        for path in ("/shares", f"/shares/{body['id']}"):
            before = _state(archive)
            assert http.get(path).status_code == 200
            _check_nothing(archive, before, f"GET {path}")
    with recipient(shared.server) as browser:
        before = _state(archive)
        assert browser.get(f"/s/{token_of(body['url'])}").status_code == 200
        assert browser.get("/s/static/share.css").status_code == 200
        _check_nothing(archive, before, "GET /s/{token}")
        before = _state(archive)
        assert open_link(browser, body["url"], body["pin"]).status_code == 303
        _check_one_action(archive, before, 1, "POST /s/{token}")
        before = _state(archive)
        assert browser.get("/s/view").status_code == 200
        _check_one_action(archive, before, 1, "GET /s/view")
        before = _state(archive)
        assert browser.get("/s/download").status_code == 200
        _check_one_action(archive, before, 1, "GET /s/download")
        before = _state(archive)
        assert browser.post("/s/logout", headers={"Origin": shared.server.url}).status_code == 200
        _check_nothing(archive, before, "POST /s/logout")
        assert browser.get("/s/view").status_code == 401
    with shared.server.http(token) as http:
        before = _state(archive)
        assert http.post(f"/shares/{body['id']}/revoke", json={"reason": "done"}).status_code == 200
        _check_one_action(archive, before, 1, "POST /shares/{share_id}/revoke")
