"""The desk console in a real Chromium (issue 8's acceptance), driven by Playwright.

Run by tests/it/console_browser.rs with one argument: a JSON file naming the chromium binary,
the hanoi247 binary, FR's console URL, the clients' .p12 files and passwords, VN's client
config, and where to put screenshots. Prints one line per step; exits non-zero naming the step
that failed. Certificates are the ones `hanoi247 init` made; Playwright presents them
(`client_certificates`), and the node's local CA is trusted through NODE_EXTRA_CA_CERTS, so the
console's own certificate is verified too.
"""

import json
import os
import re
import subprocess
import sys
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

ARGS = json.load(open(sys.argv[1]))
URL = ARGS["url"]
SHOTS = ARGS["screenshots"]
STEP = ["start"]


def step(text):
    STEP[0] = text
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def hanoi247(*args):
    done = subprocess.run([ARGS["binary"], *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"hanoi247 {' '.join(args)}: {done.stderr}")
    return done.stdout


def send_flash(subject):
    fields = {
        "requesting_authority": "Prosecutor A05, Hanoi",
        "offence": "fraud (phishing)",
        "facts": "phishing campaign against bank customers",
        "data_to_preserve": "mailbox and IP logs of the sending account",
        "link_to_offence": "the account sent the phishing mails",
        "custodian_or_location": "mail provider X, Paris",
        "necessity": "the provider deletes in 24 hours",
        "mutual_legal_assistance_to_follow": "true",
        "preservation_days": "90",
    }
    args = ["send", "--config", ARGS["vn_client"], "--to", "FR", "--type", "preservation",
            "--precedence", "flash", "--subject", subject, "--json"]
    for key, value in fields.items():
        args += ["--field", f"{key}={value}"]
    return json.loads(hanoi247(*args))["envelope"]["id"]


def vn_state(message_id):
    return json.loads(hanoi247("show", message_id, "--config", ARGS["vn_client"], "--json"))["state"]


def main():
    hosts_seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=ARGS["chromium"], args=["--no-sandbox"])

        def context(client, width=1280, height=800):
            certs = [{"origin": URL, "pfxPath": client["p12"], "passphrase": client["password"]}] if client else []
            # Without a certificate the browser itself meets the console's certificate: trust it
            # blindly, so that the missing client certificate is the only reason left to refuse.
            ctx = browser.new_context(client_certificates=certs, viewport={"width": width, "height": height},
                                      timezone_id="Europe/Paris", locale="en-GB", ignore_https_errors=not client)
            ctx.on("request", lambda request: hosts_seen.append(request.url))
            return ctx

        step("a browser without a client certificate cannot open the console")
        refused(context(None))
        step("a browser with a certificate from another CA (VN's officer) cannot open the console")
        refused(context(ARGS["foreign"]))

        officer = context(ARGS["officer"]).new_page()
        step("the FR officer opens the inbox; it carries the CSP and goes live")
        response = officer.goto(URL + "/inbox")
        assert response.status == 200, response.status
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp, csp
        expect(officer.locator("#live.on")).to_be_visible(timeout=10_000)

        step("the officer allows browser notifications once, with the button (in another tab)")
        # Another tab of the same browser, so the keyboard steps below start from a fresh page.
        other_tab = officer.context.new_page()
        other_tab.goto(URL + "/inbox")
        allow = other_tab.locator("#allow-notifications")
        expect(allow).to_be_visible()
        officer.context.grant_permissions(["notifications"], origin=URL)
        allow.click()
        expect(allow).to_be_hidden()
        expect(other_tab.locator("body")).to_have_attribute("data-notifications", "granted")
        other_tab.close()
        officer.reload()
        expect(officer.locator("#allow-notifications")).to_be_hidden()
        expect(officer.locator("#live.on")).to_be_visible(timeout=10_000)

        step("VN sends FR a FLASH preservation request")
        message_id = send_flash("Preserve the mailbox of the phishing account")
        sent = time.monotonic()
        row = officer.locator(f'tr[data-id="{message_id}"]')
        expect(row).to_be_visible(timeout=2_000)
        print(f"    in the open inbox {time.monotonic() - sent:.2f} s after `send` returned, without a reload")
        expect(row.locator(".prec-flash")).to_have_text("FLASH")
        expect(officer.locator("#flash-banner")).to_be_visible()
        assert officer.title().startswith("(1) "), officer.title()
        # The FLASH called for attention once: a tone and a browser notification.
        expect(officer.locator("body")).to_have_attribute("data-attention-calls", "1")
        expect(officer.locator("body")).to_have_attribute("data-notifications-shown", "1")
        officer.wait_for_timeout(1_200)  # let the arrival highlight fade for the picture
        officer.screenshot(path=os.path.join(SHOTS, "console-inbox.png"), full_page=True)

        step("keyboard: the first Tab reaches the skip link")
        officer.keyboard.press("Tab")
        expect(officer.locator("a.skip")).to_be_focused()

        step("the officer opens the message page and acknowledges it, by keyboard alone")
        row.locator("a").focus()
        officer.keyboard.press("Enter")
        expect(officer.locator("h1")).to_contain_text("Preserve the mailbox")
        expect(officer.locator("main")).to_contain_text("mail provider X, Paris")
        expect(officer.locator("time[data-local-only]").first).not_to_be_empty()
        officer.locator("#ack-note").focus()
        officer.keyboard.type("Taken by the FR night desk")
        officer.screenshot(path=os.path.join(SHOTS, "console-message.png"), full_page=True)
        officer.keyboard.press("Tab")
        expect(officer.get_by_role("button", name="Acknowledge")).to_be_focused()
        officer.keyboard.press("Enter")
        expect(officer.locator("dl.fields .state")).to_have_text("ACKNOWLEDGED")

        step("VN's node reports ACKNOWLEDGED")
        deadline = time.monotonic() + 30
        while vn_state(message_id) != "ACKNOWLEDGED":
            assert time.monotonic() < deadline, "VN never saw the acknowledgement"
            time.sleep(0.1)

        step("the new-request form names the missing preservation field; nothing is stored")
        officer.goto(URL + "/outbox")
        before = officer.locator("tr[data-id]").count()
        officer.goto(URL + "/new")
        officer.select_option("#f-destination", "VN")
        officer.select_option("#f-precedence", "PRECEDENCE_IMMEDIATE")
        officer.fill("#f-subject", "Preserve the server logs")
        for field, value in [("requesting_authority", "Parquet de Paris, J3"), ("facts", "ransomware"),
                             ("data_to_preserve", "server logs"), ("link_to_offence", "the C2 server"),
                             ("custodian_or_location", "hosting provider Y"), ("necessity", "rotation in 48h")]:
            officer.fill(f"#f-preservation-{field}", value)
        officer.get_by_role("button", name="Send request").click()
        error = officer.locator("#f-preservation-offence-error")
        expect(error).to_have_text("required")
        expect(officer.locator("#f-preservation-offence")).to_have_attribute("aria-invalid", "true")
        expect(officer.locator("#f-preservation-facts")).to_have_value("ransomware")
        officer.screenshot(path=os.path.join(SHOTS, "console-new-request-error.png"), full_page=True)
        officer.goto(URL + "/outbox")
        assert officer.locator("tr[data-id]").count() == before, "the refused request was stored"

        step("filled in, the form sends the request (to DE, which is down: it waits in the queue)")
        officer.goto(URL + "/new")
        officer.select_option("#f-destination", "DE")
        officer.select_option("#f-precedence", "PRECEDENCE_IMMEDIATE")
        officer.fill("#f-subject", "Preserve the server logs")
        for field, value in [("requesting_authority", "Parquet de Paris, J3"), ("offence", "ransomware"),
                             ("facts", "encrypted hospital servers"), ("data_to_preserve", "server logs"),
                             ("link_to_offence", "the C2 server"), ("custodian_or_location", "hosting provider Y"),
                             ("necessity", "rotation in 48h")]:
            officer.fill(f"#f-preservation-{field}", value)
        officer.get_by_role("button", name="Send request").click()
        expect(officer.locator("dl.fields .state").first).to_have_text(re.compile("QUEUED|WAITING_RETRY"))
        officer.goto(URL + "/outbox")
        assert officer.locator("tr[data-id]").count() == before + 1

        step("the officer answers with the outcome form (EXECUTED, preserved 90 days) and FR's own conditions (H2)")
        # The end of the day 90 days from now (UTC), what the node makes of the date the form sends.
        until_day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 90 * 86_400))
        until_time = f"{until_day}T23:59:59"
        officer.goto(URL + f"/message/{message_id}")
        officer.locator("#respond-text").fill(f"Mailbox preserved until {until_day} under reference PRV-117")
        officer.locator("#respond-handling").select_option("HANDLING_CODE_H2")
        officer.locator("#respond-outcome").select_option("EXECUTED")
        officer.locator("#respond-preserved-until").fill(until_day)
        officer.locator("#respond-reference").fill("PRV-117")
        officer.once("dialog", lambda dialog: dialog.accept())
        officer.get_by_role("button", name="Send response").click()
        expect(officer.locator("dl.fields .state")).to_have_text("ANSWERED")
        expect(officer.locator("ul.chain")).to_contain_text("PRV-117")
        outcome = officer.locator("section.outcome")
        expect(outcome.locator("span.outcome")).to_have_text("EXECUTED")
        expect(outcome.locator("dd.preserved-until")).to_contain_text(until_time)
        expect(outcome).to_contain_text("PRV-117")
        outcome.scroll_into_view_if_needed()
        officer.screenshot(path=os.path.join(SHOTS, "console-outcome.png"), full_page=True)

        step("the preservations view lists it with its days left")
        officer.get_by_role("link", name="Preservations").click()
        listed = officer.locator(f'table.preservations tr[data-id="{message_id}"]')
        expect(listed).to_be_visible()
        days = int(listed.locator("td.days-left").inner_text())
        # 90 whole days and some hours left, unless the day ended (UTC) since the answer.
        assert days in (89, 90), f"{days} days left, not 90"
        expect(listed).to_contain_text(until_time)
        expect(listed).to_contain_text("EXECUTED")
        expect(officer.locator(f'tr[data-id="{message_id}"] a')).to_have_text(re.compile("Preserve the mailbox"))
        officer.screenshot(path=os.path.join(SHOTS, "console-expiring.png"), full_page=True)
        officer.goto(URL + "/expiring?within=14d")
        expect(officer.locator("p.empty")).to_be_visible()
        expect(officer.locator(f'tr[data-id="{message_id}"]')).to_have_count(0)

        step("the print view shows the outcome")
        officer.goto(URL + f"/message/{message_id}")
        officer.get_by_role("link", name="Printable view of the case").click()
        expect(officer.locator("section.print-proofs")).to_contain_text("Signatures and receipts")
        expect(officer.locator("section.print-proofs code.digest").first).not_to_be_empty()
        expect(officer.locator("article.print-reply").last).to_contain_text("H2")
        expect(officer.locator("article.print-reply").last.locator("span.outcome")).to_have_text("EXECUTED")
        expect(officer.locator("main")).to_contain_text(until_time)
        officer.emulate_media(media="print")
        expect(officer.locator("header")).to_be_hidden()
        expect(officer.locator("p.no-print")).to_be_hidden()
        officer.screenshot(path=os.path.join(SHOTS, "console-case-print.png"), full_page=True)
        officer.emulate_media(media="screen")
        deadline = time.monotonic() + 30
        while vn_state(message_id) != "ANSWERED":
            assert time.monotonic() < deadline, "VN never saw the answer"

        step("the officer closes the case: the page says closed, and it is off the preservations view")
        officer.goto(URL + f"/message/{message_id}")
        officer.locator("#close-reason").fill("MLA request answered")
        officer.once("dialog", lambda dialog: dialog.accept())
        officer.get_by_role("button", name="Close case").click()
        expect(officer.locator("dl.fields .badge-closed")).to_have_text("CLOSED")
        expect(officer.locator("main")).to_contain_text("MLA request answered")
        expect(officer.get_by_role("button", name="Close case")).to_have_count(0)
        officer.goto(URL + "/expiring")
        expect(officer.locator(f'tr[data-id="{message_id}"]')).to_have_count(0)

        step("the auditor cannot acknowledge: refused by the server, not just a hidden button")
        second = send_flash("Second request")
        auditor = context(ARGS["auditor"]).new_page()
        auditor.goto(URL + "/new")  # any page carries the auditor's own form token
        with auditor.expect_navigation() as navigation:
            auditor.evaluate(
                """([id, token]) => {
                    const form = document.createElement("form");
                    form.method = "post";
                    form.action = "/message/" + id + "/acknowledge";
                    const field = document.createElement("input");
                    field.type = "hidden"; field.name = "csrf"; field.value = token;
                    form.appendChild(field);
                    document.body.appendChild(form);
                    form.submit();
                }""",
                [second, auditor.locator('meta[name="csrf-token"]').get_attribute("content")],
            )
        assert navigation.value.status == 403, navigation.value.status
        expect(auditor.locator(".refusal")).to_contain_text("may not call Acknowledge")
        assert vn_state(second) != "ACKNOWLEDGED"

        step("an agency does not see another client's messages")
        agency = context(ARGS["agency"]).new_page()
        agency.goto(URL + "/outbox")
        expect(agency.locator("table#outbox")).to_be_visible()
        assert agency.locator("tr[data-id]").count() == 0, "the agency sees messages it did not submit"
        assert agency.goto(URL + f"/message/{message_id}").status == 403

        step("the operator's network page")
        operator = context(ARGS["operator"]).new_page()
        operator.goto(URL + "/network")
        expect(operator.locator('article.tile[data-peer="VN"]')).to_be_visible()
        expect(operator.locator('article.tile[data-peer="DE"]')).to_contain_text("1 (FLASH 0, IMMEDIATE 1")
        operator.screenshot(path=os.path.join(SHOTS, "console-network.png"), full_page=True)

        step("the operator's statistics: counts and times, never content")
        operator.goto(URL + "/statistics")
        expect(operator.locator("table.statistics").first).to_contain_text("PRESERVATION")
        expect(operator.locator("main")).not_to_contain_text("phishing account")
        operator.screenshot(path=os.path.join(SHOTS, "console-statistics.png"), full_page=True)

        step("a narrow window")
        narrow = context(ARGS["officer"], width=420, height=800).new_page()
        narrow.goto(URL + "/inbox")
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 420 + 1, f"the page is {width}px wide in a 420px window"
        narrow.screenshot(path=os.path.join(SHOTS, "console-inbox-narrow.png"))

        step("no request went to any host but the node")
        foreign = [url for url in hosts_seen if not url.startswith(URL + "/")]
        assert not foreign, foreign
        print(f"    {len(hosts_seen)} requests, all to {URL}")
        browser.close()


def refused(ctx):
    page = ctx.new_page()
    try:
        response = page.goto(URL + "/inbox")
    except PlaywrightError as error:
        print(f"    refused: {str(error).splitlines()[0]}")
        ctx.close()
        return
    assert response is None or response.status != 200 or "inbox-rows" not in page.content(), \
        "the console opened without an acceptable certificate"
    text = page.locator("body").inner_text()[:200].replace("\n", " ") if response else ""
    print(f"    refused: status {response.status if response else None}: {text}")
    ctx.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - name the step that failed, then fail
        print(f"FAILED at step: {STEP[0]}: {error}", flush=True)
        raise
    print("console browser tests: all steps passed", flush=True)
