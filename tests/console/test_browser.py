"""The console in a real browser: Debian's Chromium driven by Playwright against a real
``iotsec serve`` (one for the module), each test in a fresh browser context.

Every page is walked with each scope, screenshotted into ``.artifacts/console/`` and
checked with axe-core (from node_modules) for serious or critical accessibility
violations; every action is performed through the page and its effect checked with the
CLI. Playwright's own browser downloads are never used: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.shellblocks import REPO
from tests.security.serving import Served, served

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
HTMX = REPO / "src" / "iotsec" / "console" / "static" / "vendor" / "htmx.min.js"
ARTIFACTS = REPO / ".artifacts" / "console"
PAGES = ["/ui/overview", "/ui/audit", "/ui/devices", "/ui/devices/cam-0001", "/ui/certificates",
         "/ui/alerts", "/ui/policy", "/ui/firmware",
         "/ui/compliance?framework=etsi-en-303-645"]

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium package (apt-get install chromium)",
                allow_module_level=True)


@dataclass(frozen=True)
class Console:
    served: Served
    tokens: dict[str, str]

    def url(self, path: str) -> str:
        return self.served.base_url + path

    def cli_json(self, *args: str, codes: tuple[int, ...] = (0,)) -> object:
        done = self.served.iotsec(*args, "--json")
        assert done.returncode in codes, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    assert AXE.exists(), "run 'make console-assets' (npm ci) first"
    assert HTMX.exists(), "run 'make console-assets' (htmx copied into the package) first"
    tmp = tmp_path_factory.mktemp("console")
    with served(tmp) as server:
        tokens = {"admin": server.token}
        for scope in ("operator", "auditor"):
            done = server.iotsec("token", "create", f"{scope}-person", "--scope",
                                 scope, "--json")
            assert done.returncode == 0, done.stderr
            tokens[scope] = json.loads(done.stdout)["token"]
        for i in range(1, 8):
            done = server.iotsec("device", "add", f"cam-{i:04d}", "--group", "cameras")
            assert done.returncode == 0, done.stderr
        done = server.iotsec("device", "add", "sensor-1", "--group", "sensors")
        assert done.returncode == 0, done.stderr
        for device in ("cam-0001", "cam-0002", "cam-0003"):
            done = server.iotsec("cert", "issue", device, "--keygen", "-o",
                                 str(tmp / device), "--days", "5")
            assert done.returncode == 0, done.stderr
        done = server.iotsec("alerts", "check")
        assert done.returncode == 0, done.stderr
        yield Console(server, tokens)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    # The test server's certificate is signed by the test home's own CA.
    context = browser.new_context(ignore_https_errors=True,  # type: ignore[attr-defined]
                                  viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def sign_in(page: object, console: Console, scope: str) -> None:
    page.goto(console.url("/ui/signin"))  # type: ignore[attr-defined]
    page.get_by_label("API token").fill(console.tokens[scope])  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/overview")  # type: ignore[attr-defined]


def axe_violations(page: object) -> list[dict[str, object]]:
    """Serious and critical axe-core violations of the page (axe evaluated through the
    DevTools protocol: the page's CSP rightly refuses injected scripts)."""
    page.evaluate(AXE.read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    found = page.evaluate(  # type: ignore[attr-defined]
        "async () => (await axe.run(document)).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scope", ["admin", "operator", "auditor"])
def test_each_scope_walks_every_page_accessibly(console: Console, page: object, scope: str):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    sign_in(page, console, scope)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path in PAGES:
        response = page.goto(console.url(path))  # type: ignore[attr-defined]
        assert response.status == 200, path
        # Figures computed in the background arrive by htmx while the page is shown.
        page.wait_for_function(  # type: ignore[attr-defined]
            "() => !document.querySelector('[hx-trigger^=\"load\"]')", timeout=60_000)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        html = page.content()  # type: ignore[attr-defined]
        assert console.tokens[scope] not in html
        name = path.strip("/").replace("/", "-").split("?")[0]
        page.screenshot(path=str(ARTIFACTS / f"{scope}-{name}.png"), full_page=True)  # type: ignore[attr-defined]
        assert axe_violations(page) == [], path
        actions = page.locator("a[href*='/confirm?do=']").count()  # type: ignore[attr-defined]
        if path == "/ui/devices/cam-0001":
            assert (actions > 0) == (scope != "auditor")
        if path == "/ui/alerts":
            buttons = page.get_by_role("button", name=re.compile("^Acknowledge")).count()  # type: ignore[attr-defined]
            assert (buttons > 0) == (scope != "auditor")
    # No CSP violation and no script error on any page (htmx loaded from /ui/static).
    assert errors == []


def test_the_phone_width_layout_is_usable(console: Console, browser: object):
    context = browser.new_context(ignore_https_errors=True,  # type: ignore[attr-defined]
                                  viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, console, "auditor")
        page.goto(console.url("/ui/devices"))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        page.screenshot(path=str(ARTIFACTS / "phone-devices.png"), full_page=True)
        assert axe_violations(page) == []
    finally:
        context.close()


def test_search_filters_and_pages_with_htmx(console: Console, page: object):
    sign_in(page, console, "auditor")
    page.goto(console.url("/ui/devices"))  # type: ignore[attr-defined]
    page.get_by_label("Id begins with").fill("sensor")  # type: ignore[attr-defined]
    rows = page.locator("table.devices tbody tr")  # type: ignore[attr-defined]
    sync_api.expect(rows).to_have_count(1)
    sync_api.expect(rows.first).to_contain_text("sensor-1")
    # htmx pushed the search into the address: a reload shows the same result.
    assert "q=sensor" in page.url  # type: ignore[attr-defined]
    page.get_by_label("Id begins with").fill("")  # type: ignore[attr-defined]
    page.get_by_label("State").select_option("pending")  # type: ignore[attr-defined]
    page.get_by_label("Group").fill("cameras")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Search").click()  # type: ignore[attr-defined]
    sync_api.expect(page.locator("table.devices tbody tr")).to_have_count(4)  # type: ignore[attr-defined]


def test_keyboard_reaches_the_sign_in_form(console: Console, page: object):
    page.goto(console.url("/ui/signin"))  # type: ignore[attr-defined]
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.id") == "token"  # type: ignore[attr-defined]
    page.keyboard.type(console.tokens["auditor"])  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/overview")  # type: ignore[attr-defined]


def test_the_operator_disables_a_device_after_confirming(console: Console, page: object):
    sign_in(page, console, "operator")
    page.goto(console.url("/ui/devices/cam-0004"))  # type: ignore[attr-defined]
    page.get_by_role("link", name="Disable").click()  # type: ignore[attr-defined]
    page.get_by_label("Type the device id to confirm").fill("cam-0004")  # type: ignore[attr-defined]
    page.screenshot(path=str(ARTIFACTS / "operator-confirm.png"))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Disable").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/devices/cam-0004?done=disable")  # type: ignore[attr-defined]
    assert console.cli_json("device", "show", "cam-0004")["state"] == "disabled"  # type: ignore[index]
    sync_api.expect(page.locator("text=device.state")).to_have_count(1)  # type: ignore[attr-defined]


def test_a_wrong_confirmation_changes_nothing(console: Console, page: object):
    sign_in(page, console, "operator")
    page.goto(console.url("/ui/devices/cam-0005/confirm?do=retire"))  # type: ignore[attr-defined]
    page.get_by_label("Type the device id to confirm").fill("cam-0006")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Retire").click()  # type: ignore[attr-defined]
    sync_api.expect(page.get_by_role("alert")).to_contain_text("not confirmed")  # type: ignore[attr-defined]
    assert console.cli_json("device", "show", "cam-0005")["state"] == "pending"  # type: ignore[index]


def test_the_admin_revokes_a_devices_certificates(console: Console, page: object):
    sign_in(page, console, "admin")
    page.goto(console.url("/ui/devices/cam-0002/confirm?do=revoke"))  # type: ignore[attr-defined]
    page.get_by_label("Type the device id to confirm").fill("cam-0002")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Revoke certificates").click()  # type: ignore[attr-defined]
    page.wait_for_url("**done=revoke")  # type: ignore[attr-defined]
    certs = console.cli_json("cert", "list", "--device", "cam-0002")
    assert certs and all(c["status"] == "revoked" for c in certs)  # type: ignore[union-attr,index]
    page.goto(console.url("/ui/certificates"))  # type: ignore[attr-defined]
    serial = certs[0]["serial"]  # type: ignore[index]
    sync_api.expect(page.locator(f"#h-revoked ~ div >> text={serial}")).to_have_count(1)  # type: ignore[attr-defined]


def test_the_authorization_check_in_the_device_page(console: Console, page: object):
    sign_in(page, console, "auditor")
    page.goto(console.url("/ui/devices/cam-0001"))  # type: ignore[attr-defined]
    page.get_by_label("Action").select_option("publish")  # type: ignore[attr-defined]
    page.get_by_label("Topic").fill("devices/cam-0001/telemetry")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Check").click()  # type: ignore[attr-defined]
    decision = page.get_by_role("status")  # type: ignore[attr-defined]
    sync_api.expect(decision).to_contain_text("publish")
    expected = console.cli_json("authz", "check", "cam-0001", "publish",
                                "devices/cam-0001/telemetry", codes=(0, 1))
    word = "Allowed" if expected["allowed"] else "Denied"  # type: ignore[index]
    sync_api.expect(decision).to_contain_text(word)


def test_the_policy_explorer_names_the_deciding_rule(console: Console, page: object):
    sign_in(page, console, "auditor")
    page.goto(console.url("/ui/policy"))  # type: ignore[attr-defined]
    page.get_by_label("Device id").fill("cam-0001")  # type: ignore[attr-defined]
    page.get_by_label("Action").select_option("subscribe")  # type: ignore[attr-defined]
    page.get_by_label("Topic").fill("devices/cam-0001/commands")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Decide").click()  # type: ignore[attr-defined]
    expected = console.cli_json("authz", "check", "cam-0001", "subscribe",
                                "devices/cam-0001/commands", codes=(0, 1))
    decision = page.get_by_role("status")  # type: ignore[attr-defined]
    sync_api.expect(decision).to_contain_text(
        "Allowed" if expected["allowed"] else "Denied")  # type: ignore[index]
    if expected.get("role"):  # type: ignore[union-attr]
        sync_api.expect(decision).to_contain_text(str(expected["role"]))  # type: ignore[index]


def test_the_operator_acknowledges_and_resolves_an_alert(console: Console, page: object):
    alerts = console.cli_json("alerts", "list", "--state", "open")
    assert alerts, "the expiring certificates raised alerts"
    alert_id = alerts[0]["id"]  # type: ignore[index]
    sign_in(page, console, "operator")
    page.goto(console.url("/ui/alerts"))  # type: ignore[attr-defined]
    row = page.locator(f"#alert-{alert_id}")  # type: ignore[attr-defined]
    row.get_by_role("button", name=f"Acknowledge alert {alert_id}").click()
    sync_api.expect(row).to_contain_text("acknowledged (by operator-person)")
    assert console.cli_json("alerts", "show", str(alert_id))["state"] == "acknowledged"  # type: ignore[index]
    page.locator(f"#alert-{alert_id}").get_by_role(  # type: ignore[attr-defined]
        "button", name=f"Resolve alert {alert_id}").click()
    sync_api.expect(page.locator(f"#alert-{alert_id}")).to_contain_text("resolved")  # type: ignore[attr-defined]
    assert console.cli_json("alerts", "show", str(alert_id))["state"] == "resolved"  # type: ignore[index]


def test_sign_out_and_an_expired_session(console: Console, page: object):
    sign_in(page, console, "auditor")
    cookies = page.context.cookies()  # type: ignore[attr-defined]
    (cookie,) = [c for c in cookies if c["name"] == "__Host-iotsec-console"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/signin")  # type: ignore[attr-defined]
    # The old cookie, replayed, opens nothing.
    page.context.add_cookies([cookie])  # type: ignore[attr-defined]
    page.goto(console.url("/ui/overview"))  # type: ignore[attr-defined]
    assert page.url.endswith("/ui/signin")  # type: ignore[attr-defined]
    # A token revoked while its session is open ends it at the next page.
    done = console.served.iotsec("token", "create", "short", "--scope",
                                 "auditor", "--json")
    created = json.loads(done.stdout)
    console.tokens["short"] = created["token"]
    sign_in(page, console, "short")
    assert console.served.iotsec("token", "revoke", created["id"]).returncode == 0
    page.goto(console.url("/ui/devices"))  # type: ignore[attr-defined]
    assert page.url.endswith("/ui/signin")  # type: ignore[attr-defined]


def test_a_forged_cross_site_form_is_refused(console: Console, page: object):
    sign_in(page, console, "admin")
    response = page.request.post(  # type: ignore[attr-defined]
        console.url("/ui/devices/cam-0007/action"),
        form={"do": "disable", "confirm": "cam-0007", "csrf": "0" * 64})
    assert response.status == 403
    assert console.cli_json("device", "show", "cam-0007")["state"] == "pending"  # type: ignore[index]
