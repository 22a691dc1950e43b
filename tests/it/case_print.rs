//! Issue 17, the printable view of a case: the request, its chain with the answer's text, and
//! each envelope's proof fingerprints — the same SHA-256 its origin signed and its receiver
//! receipted — for whoever may read the request, nobody else.

use std::sync::Arc;

use hanoi247::domain::access::Role;
use hanoi247::proto::{GetProofRequest, MessageState, RespondRequest};

use crate::console::{browser, console_port, fetch};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_print_view_carries_the_chain_and_the_fingerprints_the_proofs_hold() {
    let clients =
        [("VN", "officer", Role::Officer), ("VN", "police", Role::Agency), ("VN", "cert", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut police = net.desk_as("VN", "police");
    let id = submit(&mut police, preservation_request("FR")).await;
    let mut fr = net.desk("FR");
    wait_state(&mut fr, &id, MessageState::Received).await;
    let answer = "Mailbox preserved under reference PRV-2026-117 <b>until</b> 2027-02-03";
    fr.respond(RespondRequest { id: id.clone(), text: answer.into(), ..Default::default() }).await.unwrap();
    let answered = wait_state(&mut police, &id, MessageState::Answered).await;

    let port = console_port(&net, "VN");
    let page = fetch(browser(&net, "VN", "officer"), port, &format!("/print/{id}"), None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let envelope = answered.envelope.unwrap();
    assert!(page.body.contains(&envelope.case_reference), "{}", page.body);
    assert!(page.body.contains(&envelope.body), "the request's text");
    assert!(page.body.contains("PRV-2026-117 &lt;b&gt;until&lt;/b&gt; 2027-02-03"), "the answer, escaped");
    // Every envelope's fingerprint is the one its proof and its receipt hold.
    let mut vn = net.desk("VN");
    let replies = vn.get(hanoi247::proto::GetRequest { id: id.clone() }).await.unwrap().into_inner().replies;
    assert!(!replies.is_empty());
    for each in std::iter::once(id.clone()).chain(replies.iter().map(|r| r.envelope.clone().unwrap().id)) {
        let proof = vn.get_proof(GetProofRequest { id: each.clone() }).await.unwrap().into_inner();
        let digest = hex::encode(hanoi247::trust::signing::sha256(&proof.envelope_canonical));
        assert!(page.body.contains(&digest), "{each}'s digest {digest} is printed");
        if let Some(receipt) = &proof.receipt {
            assert_eq!(hex::encode(&receipt.envelope_sha256), digest, "receipted what was signed");
            let receiver = hex::encode(hanoi247::trust::signing::sha256(&receipt.receiver_certificate));
            assert!(page.body.contains(&receiver), "the receiver's certificate fingerprint");
        }
    }
    let message = fetch(browser(&net, "VN", "officer"), port, &format!("/message/{id}"), None).await;
    assert!(message.body.contains(&format!("href=\"/print/{id}\"")), "linked from the message page");
    let style = fetch(browser(&net, "VN", "officer"), port, "/assets/console.css", None).await;
    assert!(style.body.contains("@media print"), "a print style sheet");

    // Read as `Get` is: the agency that sent it may print it, another may not.
    let own = fetch(browser(&net, "VN", "police"), port, &format!("/print/{id}"), None).await;
    assert_eq!(own.status, 200);
    let other = fetch(Arc::clone(&browser(&net, "VN", "cert")), port, &format!("/print/{id}"), None).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert!(!other.body.contains(&envelope.case_reference));
    let unknown = fetch(browser(&net, "VN", "officer"), port, "/print/not-a-uuid", None).await;
    assert!(matches!(unknown.status, 400 | 404 | 422), "{}", unknown.status);
}
