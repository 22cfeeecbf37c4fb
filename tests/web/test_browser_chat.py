"""Browser users chat through the web listener, with each other and with CLI users on the TCP
listener of the same ``twistd`` (headless Chromium via Playwright)."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from tests.web.conftest import (
    WAIT,
    Cli,
    WebServer,
    expect,
    open_chat,
    send_text,
    sign_up,
)


def test_two_browsers_chat(web_server: WebServer, new_page: Any, screenshots: Path) -> None:
    """alice and bob, each in their own browser context: first contact pins the server,
    text with a link arrives as a clickable link (never HTML), unread count, typing,
    ✓ → ✓✓ read marks (still read after a reload), Shift+Enter makes a new line."""
    alice, bob = new_page(), new_page()
    sign_up(alice, web_server, "alice", screenshot=screenshots / "web-signin.png")
    sign_up(bob, web_server, "bob")
    # The page's login negotiated the post-quantum hybrid with the real server.
    expect(alice.locator("#connection-state")).to_have_attribute(
        "title", "protocol version 2, key exchange X25519MLKEM768")

    open_chat(alice, "bob")
    send_text(alice, "hi bob, see https://example.org/a?b=1 <b>not bold</b>")
    mine = alice.locator(".message.mine").last
    expect(mine.locator(".mark")).to_have_text("✓")

    conv = bob.locator("#conversation-list button[data-key='u:alice']")
    expect(conv.locator(".badge")).to_have_text("1")
    expect(alice.locator(".message.mine .mark").last).to_have_text("✓✓")
    conv.click()
    theirs = bob.locator(".message.theirs").last
    expect(theirs.locator("a")).to_have_attribute("href", "https://example.org/a?b=1")
    expect(theirs.locator(".text")).to_contain_text("<b>not bold</b>")
    assert theirs.locator("b").count() == 0
    expect(alice.locator(".message.mine .mark").last).to_have_text("✓✓ read")

    bob.locator("#composer-text").press_sequentially("typing")
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    bob.fill("#composer-text", "")
    bob.locator("#composer-text").type("line one")
    bob.keyboard.press("Shift+Enter")
    bob.locator("#composer-text").type("line two")
    bob.keyboard.press("Enter")
    expect(alice.locator(".message.theirs .text").last).to_have_text("line one\nline two")
    expect(alice.locator("#typing")).to_have_text("")
    alice.screenshot(path=str(screenshots / "web-conversation.png"))
    assert alice.errors == [] and bob.errors == []

    # The receipts are kept in IndexedDB: after a reload her message (back from History,
    # which carries no receipts) still shows read.
    wait_for_stored_marks(alice, "alice", lambda rows: rows and rows[0]["by"]["bob"][1] >= 1)
    alice.reload()
    sign_up(alice, web_server, "alice", register=False)
    alice.locator("#conversation-list button[data-key='u:bob']").click()
    expect(alice.locator(".message.mine .mark")).to_have_text(["✓✓ read"])

    bob.click("#signout-button")
    expect(alice.locator("#conversation-status")).to_contain_text("last seen")
    expect(alice.locator("#conversation-list .dot.online")).to_have_count(0)


def test_browser_and_cli_chat_both_ways(web_server: WebServer, new_page: Any, cli: Cli) -> None:
    """A browser user and a terminal (CLI) user exchange messages in both directions."""
    cli.run("register", "dave")
    page = new_page()
    sign_up(page, web_server, "carol")
    open_chat(page, "dave")
    tail = cli.tail("dave")
    try:
        send_text(page, "hello dave from the browser")
        got = tail.wait_for(lambda x: x.get("text") == "hello dave from the browser")
        assert got["from"] == "carol" and got["to"] == "dave"
        cli.run("send", "dave", "--to", "carol", "hello carol from the terminal")
        expect(page.locator(".message.theirs .text").last).to_have_text(
            "hello carol from the terminal")
        # The CLI's DeliveryAck reaches the browser as a delivered mark.
        expect(page.locator(".message.mine .mark").first).to_have_text("✓✓")
    finally:
        tail.stop()


def test_group_with_browser_and_cli_members(web_server: WebServer, new_page: Any,
                                            cli: Cli, screenshots: Path) -> None:
    """A browser user creates a group with another browser user and a CLI user, renames it,
    makes one an admin and removes the other; messages flow between all kinds of members; the
    sender's marks say how many of the other members got and read a message."""
    cli.run("register", "gwen")
    owner, member = new_page(), new_page()
    sign_up(owner, web_server, "frank")
    sign_up(member, web_server, "hana")
    owner.click("#new-group-button")
    owner.fill("#new-group-name", "launch team")
    owner.fill("#new-group-members", "hana gwen")
    owner.click("#new-group-create")
    expect(owner.locator("#conversation-title")).to_have_text("launch team")
    send_text(owner, "welcome to the team")

    tail = cli.tail("gwen")
    try:
        got = tail.wait_for(lambda x: x.get("text") == "welcome to the team")
        group_id = got["group_id"]
        assert group_id > 0
        cli.run("send", "gwen", "--group", str(group_id), "thanks from the terminal")
        expect(owner.locator(".message.theirs").last).to_contain_text("thanks from the terminal")
        expect(owner.locator(".message.theirs .sender").last).to_have_text("gwen")
        # Marks in a group count members: gwen's CLI and hana's page acknowledged (delivered
        # to all), nobody has read it yet.
        first = owner.locator(".message.mine .mark").first
        expect(first).to_have_text("✓✓")
        expect(first).to_have_attribute("title", "delivered to gwen, hana")
        member.locator(f"#conversation-list button[data-key='g:{group_id}']").click()
        expect(member.locator(".message .text").last).to_have_text("thanks from the terminal")
        # hana opened the group: read by one of the two others, and the title names her.
        expect(first).to_have_text("✓✓ read by 1 of 2")
        expect(first).to_have_attribute("title", "read by hana")
        send_text(member, "hi all from hana's browser")
        tail.wait_for(lambda x: x.get("text") == "hi all from hana's browser")

        owner.click("#group-button")
        dialog = owner.locator("#group-dialog")
        expect(dialog.locator(".member")).to_have_count(3)
        owner.fill("#group-title", "launch crew")
        owner.click("#group-rename")
        expect(owner.locator("#conversation-title")).to_have_text("launch crew")
        dialog.get_by_role("button", name="Make admin: hana").click()
        expect(dialog.locator(".member", has_text="hana").locator(".role")).to_have_text("admin")
        owner.screenshot(path=str(screenshots / "web-group.png"))
        dialog.get_by_role("button", name="Remove gwen").click()
        expect(dialog.locator(".member")).to_have_count(2)
        expect(member.locator(".event").last).to_have_text("frank removed gwen")
        tail.wait_for(lambda x: x.get("type") == "event"
                      and x["event"]["action"] == "removed")
        owner.fill("#group-add-name", "gwen")
        owner.click("#group-add")
        expect(dialog.locator(".member")).to_have_count(3)
        owner.click("#group-dialog button[value=close]")
        expect(member.locator(".event").last).to_have_text("frank added gwen")
        tail.wait_for(lambda x: x.get("type") == "event"
                      and x["event"]["action"] == "added")

        member.click("#group-button")
        member.click("#group-leave")
        expect(member.locator("#conversation-status")).to_have_text(
            "You are no longer a member of this group.")
        expect(member.locator("#composer")).to_be_hidden()
        expect(owner.locator(".event").last).to_have_text("hana left")
    finally:
        tail.stop()


def noise_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of random pixels (incompressible: its size is about 3 x w x h)."""
    raw = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def gradient_png(width: int, height: int) -> bytes:
    """A valid RGB PNG with a colour gradient (a pleasant picture for the screenshot)."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")
        for x in range(width):
            row += bytes((40 + 180 * x // width, 90 + 120 * y // height, 220 - 150 * x // width))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _image_bytes_in_page(page: Any, selector: str) -> bytes:
    data = page.eval_on_selector(selector, """async (img) => {
        const buf = await (await fetch(img.src)).arrayBuffer();
        return Array.from(new Uint8Array(buf));
    }""")
    return bytes(data)


def test_images_byte_identical(web_server: WebServer, new_page: Any, cli: Cli,
                               tmp_path: Path, screenshots: Path) -> None:
    """An image sent with the file picker arrives byte-identical in another browser and at the
    CLI; one sent by the CLI (larger than a chunk) shows in the browser byte-identical; a
    non-image is refused locally. After a reload the image (History has no bytes) shows as
    "image (size, not on this device)"."""
    cli.run("register", "kim")
    sender, receiver = new_page(read_blobs=True), new_page(read_blobs=True)
    sign_up(sender, web_server, "ivy")
    sign_up(receiver, web_server, "jon")
    picture = tmp_path / "plot.png"
    picture.write_bytes(gradient_png(240, 160))
    open_chat(sender, "jon")
    sender.set_input_files("#composer-file", str(picture))
    expect(sender.locator(".message.mine .mark").last).to_have_text("✓")
    receiver.locator("#conversation-list button[data-key='u:ivy']").click()
    expect(receiver.locator(".message.theirs img.picture")).to_be_visible()
    got = _image_bytes_in_page(receiver, ".message.theirs img.picture")
    assert got == picture.read_bytes()
    receiver.screenshot(path=str(screenshots / "web-image.png"))
    # History carries no image bytes: after a reload the image is named, not shown. (Once the
    # page stored its cursor: before that, a reload would deliver the image again.)
    deadline = time.monotonic() + WAIT
    while (receiver.evaluate(STORED_CURSOR_JS, "jon") or 0) < 1:
        assert time.monotonic() < deadline, "the cursor was never stored"
        receiver.wait_for_timeout(50)  # polling IndexedDB
    receiver.reload()
    sign_up(receiver, web_server, "jon", register=False)
    receiver.locator("#conversation-list button[data-key='u:ivy']").click()
    expect(receiver.locator(".message.theirs .image-missing")).to_have_text(
        re.compile(r"^image \(\d+ KB, not on this device\)$"))

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    sender.set_input_files("#composer-file", str(text_file))
    expect(sender.locator("#composer-error")).to_contain_text("Only PNG")

    open_chat(sender, "kim")
    tail = cli.tail("kim")
    try:
        sender.set_input_files("#composer-file", str(picture))
        line = tail.wait_for(lambda x: x.get("type") == "image")
        assert Path(line["image_path"]).read_bytes() == picture.read_bytes()
    finally:
        tail.stop()
    big = tmp_path / "big.png"
    big.write_bytes(noise_png(400, 500))  # over one 512 KiB chunk
    assert len(big.read_bytes()) > 524288
    cli.run("send-image", "kim", "--to", "ivy", str(big))
    img = sender.locator(".message.theirs img.picture").last
    expect(img).to_be_visible()
    data = _image_bytes_in_page(sender, ".message.theirs img.picture >> nth=-1")
    assert hashlib.sha256(data).digest() == hashlib.sha256(big.read_bytes()).digest()


def test_offline_messages_arrive_at_sign_in(web_server: WebServer, new_page: Any,
                                            cli: Cli) -> None:
    """Messages sent while the browser user is signed out are shown after signing in, with
    the unread count."""
    cli.run("register", "lena")
    page = new_page()
    sign_up(page, web_server, "mia")
    page.click("#signout-button")
    expect(page.locator("#signin-screen")).to_be_visible()
    cli.run("send", "lena", "--to", "mia", "while you were out 1")
    cli.run("send", "lena", "--to", "mia", "while you were out 2")
    sign_up(page, web_server, "mia", register=False)
    conv = page.locator("#conversation-list button[data-key='u:lena']")
    expect(conv.locator(".badge")).to_have_text("2")
    conv.click()
    expect(page.locator(".message.theirs .text")).to_have_text(
        ["while you were out 1", "while you were out 2"])


def test_phone_width_and_keyboard_only(web_server: WebServer, new_page: Any) -> None:
    """At phone width the list and the conversation take turns; everything is reachable with
    the keyboard (Tab order, Enter) and labelled."""
    page = new_page(viewport={"width": 390, "height": 780})
    page.goto(web_server.url)
    page.wait_for_selector("body[data-ready=true]")
    expect(page.get_by_label("User name", exact=True)).to_be_focused()
    page.keyboard.type("nora")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password", exact=True)).to_be_focused()
    page.keyboard.type("correct horse battery")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator("#register-button")).to_be_focused()
    page.keyboard.press("Enter")
    trust = page.locator("#trust-screen")
    page.wait_for_selector("#trust-screen:not([hidden]), #chat-screen:not([hidden])")
    if trust.is_visible():
        expect(page.locator("#trust-accept")).to_be_focused()
        page.keyboard.press("Enter")
    expect(page.locator("#chat-screen")).to_be_visible()
    page.get_by_label("Start a chat with (user name)").fill("nora")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    expect(page.locator("#sidebar")).to_be_hidden()
    page.keyboard.type("note to self")
    page.keyboard.press("Enter")
    expect(page.locator(".message.mine .text")).to_have_text("note to self")
    page.get_by_label("Back to the list").click()
    expect(page.locator("#sidebar")).to_be_visible()


STORED_MARKS_JS = """
async (name) => {
  const { LocalStore } = await import("/store.js");
  return (await LocalStore.open()).marks(name);
}
"""


def wait_for_stored_marks(page: Any, name: str, predicate: Any) -> None:
    """Poll the page's IndexedDB until the account's stored marks satisfy ``predicate``."""
    deadline = time.monotonic() + WAIT
    while not predicate(page.evaluate(STORED_MARKS_JS, name)):
        assert time.monotonic() < deadline, "the marks were never stored"
        page.wait_for_timeout(50)  # polling IndexedDB


STORED_CURSOR_JS = """
async (name) => {
  const { LocalStore } = await import("/store.js");
  return (await LocalStore.open()).cursor(name);
}
"""


def test_history_loads_on_scroll_up_after_a_reload(web_server: WebServer, new_page: Any,
                                                  cli: Cli) -> None:
    """After a reload nothing is delivered again, yet the conversation list is kept and the
    conversation shows its latest messages from History; scrolling up loads older pages."""
    cli.run("register", "sam")
    page = new_page()
    sign_up(page, web_server, "rita")
    open_chat(page, "sam")
    for n in range(45):
        send_text(page, f"line {n}")
    expect(page.locator(".message.mine .mark")).to_have_text(["✓"] * 45)
    # The copies of her own messages come back to her log (user_seq 1..45); once the page has
    # stored that cursor, a reload delivers nothing again.
    deadline = time.monotonic() + WAIT
    while page.evaluate(STORED_CURSOR_JS, "rita") != 45:
        assert time.monotonic() < deadline, "the cursor never reached 45"
        page.wait_for_timeout(50)  # polling IndexedDB
    page.reload()
    sign_up(page, web_server, "rita", register=False)
    page.locator("#conversation-list button[data-key='u:sam']").click()
    texts = page.locator(".message.mine .text")
    expect(texts.last).to_have_text("line 44")
    assert texts.count() == 30
    page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
    expect(texts).to_have_count(45)
    expect(texts.first).to_have_text("line 0")
    assert page.errors == []


def test_desktop_notification_when_hidden(web_server: WebServer, new_page: Any,
                                          cli: Cli) -> None:
    """With notifications allowed and the tab hidden, an incoming message shows a desktop
    notification (sender and text); a visible tab shows none."""
    cli.run("register", "uma")
    page = new_page()
    page.add_init_script("""
      window.__notes = [];
      window.__hidden = false;
      Object.defineProperty(document, "hidden", { get: () => window.__hidden });
      window.Notification = class {
        static permission = "granted";
        static requestPermission() { return Promise.resolve("granted"); }
        constructor(title, options) { window.__notes.push([title, options.body]); }
      };
    """)
    sign_up(page, web_server, "tess")
    cli.run("send", "uma", "--to", "tess", "seen in the open tab")
    expect(page.locator("#conversation-list button[data-key='u:uma']")).to_be_visible()
    page.evaluate("() => { window.__hidden = true; "
                  "document.dispatchEvent(new Event('visibilitychange')); }")
    cli.run("send", "uma", "--to", "tess", "while hidden")
    page.wait_for_function("() => window.__notes.length > 0")
    assert page.evaluate("window.__notes") == [["uma", "while hidden"]]


DROP_AND_PASTE_JS = """
async (bytes) => {
  const file = (name) => new File([new Uint8Array(bytes)], name, { type: "image/png" });
  const drop = new DataTransfer();
  drop.items.add(file("dropped.png"));
  const pane = document.getElementById("conversation");
  pane.dispatchEvent(new DragEvent("dragover", { dataTransfer: drop, bubbles: true,
    cancelable: true }));
  pane.dispatchEvent(new DragEvent("drop", { dataTransfer: drop, bubbles: true,
    cancelable: true }));
  const paste = new DataTransfer();
  paste.items.add(file("pasted.png"));
  document.getElementById("composer-text").dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: paste, bubbles: true, cancelable: true }));
}
"""


def test_image_by_drag_and_drop_and_paste(web_server: WebServer, new_page: Any) -> None:
    """Dropping an image file on the conversation and pasting one into the composer both send
    it (here to oneself: each is stored and shown inline)."""
    page = new_page()
    sign_up(page, web_server, "xena")
    open_chat(page, "xena")
    page.evaluate(DROP_AND_PASTE_JS, list(gradient_png(64, 48)))
    expect(page.locator(".message.mine img.picture")).to_have_count(2)
    expect(page.locator(".message.mine .mark")).to_have_text(["✓", "✓"])


def test_sign_in_errors_are_shown(web_server: WebServer, new_page: Any) -> None:
    """A taken name, a wrong password and an invalid name are reported on the sign-in form;
    the form stays usable for another try."""
    page = new_page()
    sign_up(page, web_server, "yara")
    page.click("#signout-button")
    page.wait_for_selector("#signin-screen:not([hidden])")
    page.fill("#signin-name", "yara")
    page.fill("#signin-password", "correct horse battery")
    page.click("#register-button")
    expect(page.locator("#signin-error")).to_have_text("that name is taken")
    page.fill("#signin-password", "not the password")
    page.click("#signin-button")
    expect(page.locator("#signin-error")).to_have_text("Wrong name or password.")
    page.fill("#signin-name", "Not A Name!")
    page.click("#signin-button")
    expect(page.locator("#signin-error")).to_contain_text("lower-case letters")
    expect(page.locator("#signin-button")).to_be_enabled()
