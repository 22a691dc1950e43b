#!/usr/bin/env python3
"""A partner agency's integration with its State's hanoi247 node, written from the protos alone.

Submits an expedited PRESERVATION request to another State's node through this node's desk API,
then follows the node's `Watch` stream and prints every lifecycle event of that request until the
destination has ANSWERED it (or the timeout passes).

    python agency.py --config net/vn/police-a05.client.toml --to FR [--timeout 600]

The client config is the TOML file `hanoi247 init` writes per desk client (paths are relative to
the file); the node lists the client under [[clients]] with role "agency" (or "officer"):

    endpoint = "127.0.0.1:7248"   # the node's desk listener
    ca = "local-ca.pem"           # the node's local CA: it issued the desk listener's certificate
    cert = "police-a05.pem"       # this client's certificate, issued by the same local CA
    key = "police-a05.key"        # and its private key

Exit status: 0 answered; 1 the request ended without an answer (EXPIRED or CANCELLED); 2 the
timeout passed; 3 the node could not be reached or refused the call.

`Submit` carries a client request id (a UUID made once per run) and is retried with it on
UNAVAILABLE and DEADLINE_EXCEEDED: the node stores the request once however many attempts reach
it (even across a node restart) and answers a retry with the message already stored.

With `--attach FILE` (repeatable) each file is uploaded first (`UploadAttachment`, in pieces)
and listed in the request by the SHA-256 the node answers; with `--save-attachments DIR` the
answer's attachments are downloaded (`DownloadAttachment`) into DIR, each checked against the
SHA-256 the answer lists.
"""

import argparse
import hashlib
import mimetypes
import pathlib
import sys
import time
import tomllib
import uuid

import grpc

HERE = pathlib.Path(__file__).resolve().parent

# `Watch` answers with this header: the sequence number its live stream starts after. It is only
# used to resume after a reconnect; everything else here comes from desk.proto.
WATCH_AFTER_HEADER = "hanoi247-watch-after"

EXIT_ANSWERED, EXIT_ENDED, EXIT_TIMEOUT, EXIT_UNREACHABLE = 0, 1, 2, 3

# Submit retries: attempts in all, the first pause (doubled each time, up to the longest), and
# the deadline of one attempt. About 18 s of pauses: long enough for a node to restart.
SUBMIT_ATTEMPTS, FIRST_PAUSE, LONGEST_PAUSE, ATTEMPT_TIMEOUT = 8, 0.25, 5.0, 30.0
# What may have been cut short on its way (node down or restarting, connection cut, no answer in
# time): worth sending again under the same client request id. Anything else is an answer.
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Bytes per uploaded piece: well under the desk listener's decode limit.
PIECE_BYTES = 256 * 1024


def say(text: str) -> None:
    print(text, flush=True)


def import_stubs(stubs: pathlib.Path):
    """The generated modules; generates them first when `stubs` holds none."""
    if not (stubs / "hanoi247" / "v1" / "desk_pb2_grpc.py").is_file():
        import generate  # next to this file

        generate.generate(stubs)
    sys.path.insert(0, str(stubs))
    from hanoi247.v1 import desk_pb2, desk_pb2_grpc, envelope_pb2

    return desk_pb2, desk_pb2_grpc, envelope_pb2


def load_client_config(path: pathlib.Path) -> dict:
    """Reads a `<name>.client.toml`: the endpoint and the PEM bytes of CA, certificate and key."""
    with path.open("rb") as file:
        config = tomllib.load(file)
    missing = [key for key in ("endpoint", "ca", "cert", "key") if key not in config]
    if missing:
        raise SystemExit(f"{path}: missing {', '.join(missing)}")
    base = path.resolve().parent
    loaded = {"endpoint": config["endpoint"]}
    for key in ("ca", "cert", "key"):
        loaded[key] = (base / config[key]).read_bytes()
    return loaded


def connect(config: dict, server_name: str | None) -> grpc.Channel:
    """A channel to the desk listener over TLS with this client's certificate.

    The desk listener's certificate names localhost, 127.0.0.1 and ::1 when `hanoi247 init` made
    it, so an endpoint of 127.0.0.1:PORT verifies as it is. When the endpoint's host is not in the
    certificate (a tunnel, a container), `--server-name` names the host to check instead.
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config["ca"],
        private_key=config["key"],
        certificate_chain=config["cert"],
    )
    options = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(config["endpoint"], credentials, options=options)


def preservation_request(desk_pb2, envelope_pb2, args) -> object:
    """An expedited preservation request with every field the Convention asks for."""
    return desk_pb2.SubmitRequest(
        destination=args.to,
        request_type=envelope_pb2.REQUEST_TYPE_PRESERVATION,
        precedence=envelope_pb2.Precedence.Value(f"PRECEDENCE_{args.precedence.upper()}"),
        subject=args.subject,
        body="The provider announced that inactive accounts are deleted within 24 hours.",
        language="en",
        handling_code=envelope_pb2.HANDLING_CODE_H2,
        preservation=envelope_pb2.PreservationRequest(
            requesting_authority="Cybercrime Police Department, Agency A05",
            offence="Fraud committed by means of a computer system (phishing)",
            facts="Since March, e-mails impersonating a national bank collected credentials of "
            "about 2,000 customers; the stolen credentials were used for transfers abroad.",
            data_to_preserve="Subscriber information, login IP addresses with timestamps, and the "
            "stored content of mailbox phish-sender@example.net",
            link_to_offence="The mailbox sent the phishing e-mails and received the stolen credentials.",
            custodian_or_location="Example Mail Ltd., mail provider established in the destination State",
            necessity="The provider deletes inactive accounts and their logs after 24 hours.",
            mutual_legal_assistance_to_follow=True,
            preservation_days=args.days,
        ),
    )


def submit_with_retries(stub, request):
    """`Submit`s `request` (which carries its `client_request_id`), retrying it unchanged on
    UNAVAILABLE and DEADLINE_EXCEEDED with a growing pause; says so at each retry."""
    pause = FIRST_PAUSE
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            return stub.Submit(request, timeout=ATTEMPT_TIMEOUT)
        except grpc.RpcError as error:
            if error.code() not in RETRY_CODES or attempt == SUBMIT_ATTEMPTS:
                raise
            say(f"submit failed ({error.code().name}: {error.details()}); retrying in "
                f"{int(pause * 1000)} ms (attempt {attempt + 1} of {SUBMIT_ATTEMPTS}, "
                f"same client request id {request.client_request_id})")
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
    raise AssertionError("unreachable: the last attempt returns or raises")


def state_name(desk_pb2, state: int) -> str:
    return desk_pb2.MessageState.Name(state).removeprefix("MESSAGE_STATE_")


def print_event(desk_pb2, event) -> None:
    what = "OVERDUE (not yet acknowledged)" if event.overdue else state_name(desk_pb2, event.state)
    note = f"  {event.note}" if event.note else ""
    at = event.at.ToDatetime().strftime("%H:%M:%S")
    say(f"event {event.sequence:>6} {at} {what:<14} peer={event.peer}{note}")


def answer(desk_pb2, envelope_pb2, stub, message_id: str, timeout: float):
    """The last response to the request, or None."""
    got = stub.Get(desk_pb2.GetRequest(id=message_id), timeout=timeout)
    answers = [reply for reply in got.replies if reply.envelope.kind == envelope_pb2.ENVELOPE_KIND_RESPONSE]
    return answers[-1] if answers else None


def upload(desk_pb2, stub, path: pathlib.Path, timeout: float):
    """Uploads the file in pieces; the `Attachment` (name, media type, size, SHA-256) to list."""
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"

    def pieces():
        with open(path, "rb") as file:
            first = True
            while True:
                data = file.read(PIECE_BYTES)
                if data or first:
                    yield desk_pb2.UploadAttachmentRequest(
                        name=path.name if first else "", media_type=media_type if first else "", data=data)
                first = False
                if not data:
                    return

    return stub.UploadAttachment(pieces(), timeout=timeout).attachment


def save_attachments(desk_pb2, stub, message, directory: pathlib.Path, timeout: float) -> list:
    """Downloads the message's attachments into `directory`, each checked against its SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    for attachment in message.envelope.attachments:
        request = desk_pb2.DownloadAttachmentRequest(id=message.envelope.id, sha256=attachment.sha256)
        content = b"".join(piece.data for piece in stub.DownloadAttachment(request, timeout=timeout))
        if hashlib.sha256(content).digest() != attachment.sha256:
            raise ValueError(f"attachment {attachment.name!r}: the content does not have the SHA-256 the message lists")
        # A bare name: never a path of the sender's choosing.
        name = pathlib.Path(attachment.name.replace("\\", "/")).name.lstrip(".") or attachment.sha256.hex()
        (directory / name).write_bytes(content)
        saved.append(directory / name)
    return saved


def run(args) -> int:
    desk_pb2, desk_pb2_grpc, envelope_pb2 = import_stubs(args.stubs.resolve())
    config = load_client_config(args.config)
    deadline = time.monotonic() + args.timeout

    def remaining() -> float:
        return max(0.1, deadline - time.monotonic())

    with connect(config, args.server_name) as channel:
        stub = desk_pb2_grpc.DeskServiceStub(channel)

        # Watch first: once the node has sent the stream's headers it reports every event after
        # that point, so nothing about the request submitted next can be missed.
        watch = stub.Watch(desk_pb2.WatchRequest(), timeout=remaining())
        headers = dict(watch.initial_metadata() or ())
        if watch.done() and watch.code() != grpc.StatusCode.OK:
            say(f"cannot watch {config['endpoint']}: {watch.code().name}: {watch.details()}")
            return EXIT_UNREACHABLE
        last_sequence = int(headers[WATCH_AFTER_HEADER]) if WATCH_AFTER_HEADER in headers else None

        request = preservation_request(desk_pb2, envelope_pb2, args)
        for path in args.attach:
            attachment = upload(desk_pb2, stub, path, remaining())
            say(f"uploaded {path.name}: {attachment.size_bytes} bytes, sha256 {attachment.sha256.hex()}")
            request.attachments.append(attachment)
        # One id for this request, the same in every retry: the node stores it once.
        request.client_request_id = str(uuid.uuid4())
        try:
            submitted = submit_with_retries(stub, request)
        except grpc.RpcError as error:
            say(f"submit refused: {error.code().name}: {error.details()}")
            watch.cancel()
            return EXIT_UNREACHABLE
        if submitted.replayed:
            say(f"the node had already stored this request (client request id {request.client_request_id})")
        envelope = submitted.message.envelope
        message_id = envelope.id
        say(f"submitted {message_id} case {envelope.case_reference} to {envelope.destination}: "
            f"{state_name(desk_pb2, submitted.message.state)}")

        while True:
            try:
                for event in watch:
                    last_sequence = event.sequence
                    if event.message_id != message_id:
                        continue
                    print_event(desk_pb2, event)
                    if event.overdue:
                        continue
                    if event.state == desk_pb2.MESSAGE_STATE_ANSWERED:
                        response = answer(desk_pb2, envelope_pb2, stub, message_id, remaining())
                        text = response.envelope.body if response else ""
                        say(f"ANSWERED by {envelope.destination}: {text}")
                        if response and args.save_attachments:
                            for path in save_attachments(desk_pb2, stub, response, args.save_attachments, remaining()):
                                say(f"saved {path} (SHA-256 checked)")
                        watch.cancel()
                        return EXIT_ANSWERED
                    if event.state in (desk_pb2.MESSAGE_STATE_EXPIRED, desk_pb2.MESSAGE_STATE_CANCELLED):
                        say(f"ended {state_name(desk_pb2, event.state)} without an answer")
                        watch.cancel()
                        return EXIT_ENDED
                reason = "the node ended the stream (shutting down)"
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    current = stub.Get(desk_pb2.GetRequest(id=message_id), timeout=10).message.state
                    say(f"timeout after {args.timeout}s: {message_id} is {state_name(desk_pb2, current)}")
                    return EXIT_TIMEOUT
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    say(f"watch failed: {error.code().name}: {error.details()}")
                    return EXIT_UNREACHABLE
                reason = f"{error.code().name}: {error.details()}"
            if time.monotonic() >= deadline:
                say(f"timeout after {args.timeout}s while reconnecting")
                return EXIT_TIMEOUT
            # The node restarted or the connection broke: resume after the last event seen, so
            # nothing is missed and nothing is printed twice. (A pause between attempts, not a wait
            # for anything in particular.)
            say(f"watch interrupted ({reason}); resuming after event {last_sequence}")
            time.sleep(min(1.0, remaining()))
            request = desk_pb2.WatchRequest()
            if last_sequence is not None:
                request.after_sequence = last_sequence
            watch = stub.Watch(request, timeout=remaining())


def main() -> int:
    parser = argparse.ArgumentParser(description="Submit a preservation request and follow it until ANSWERED.")
    parser.add_argument("--config", type=pathlib.Path, required=True, help="a <name>.client.toml from hanoi247 init")
    parser.add_argument("--to", required=True, help="destination node code, e.g. FR")
    parser.add_argument("--precedence", default="flash", choices=["flash", "immediate", "priority", "routine"])
    parser.add_argument("--subject", default="Preserve mailbox used in a phishing campaign")
    parser.add_argument("--days", type=int, default=90, help="preservation period asked (at least 60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    parser.add_argument("--stubs", type=pathlib.Path, default=HERE / "generated", help="generated stubs directory")
    parser.add_argument("--attach", type=pathlib.Path, action="append", default=[], help="a file to attach (repeatable)")
    parser.add_argument("--save-attachments", type=pathlib.Path, help="save the answer's attachments in this directory")
    parser.add_argument("--server-name", help="host name to check in the desk certificate instead of the endpoint's")
    args = parser.parse_args()
    try:
        return run(args)
    except grpc.RpcError as error:
        say(f"node refused the call: {error.code().name}: {error.details()}")
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
