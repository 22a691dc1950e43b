//! The desk console: the node's HTTPS listener for officers' browsers (TLS 1.3, a client
//! certificate from the node's local CA required, HTTP/1.1 served by axum on our TLS streams).
//!
//! The console decides nothing itself: every page and every action is a [`Desk`] operation, in
//! process, made by the caller that [`Desk::authorize`] finds for the browser's client
//! certificate, exactly as for a gRPC call on the desk listener. So roles, scopes, validation
//! and the lifecycle are checked by the one code that guards the gRPC calls. What the console
//! adds: HTML (`pages`), the words (`strings`), form decoding and the form token that stops
//! cross-site requests (`form`), security headers, Server-Sent Events from `watch`, and the HTTP
//! status of each desk refusal ([`http_status`]).
//!
//! Boundary: may import `desk` and everything below it; never the gRPC edge (`rpc`), the node or
//! the command line.

mod form;
mod history;
mod pages;
pub mod strings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::desk::{Desk, DeskError};
use crate::domain::access::{Action, Caller};
use crate::domain::follow_up::{FollowUp, FollowUpError};
use crate::domain::identity::{Identity, identity_of_cert};
use crate::domain::validation::FieldError;
use crate::proto::{
    AcknowledgeRequest, CancelRequest, DisputePrecedenceRequest, DownloadAttachmentRequest, GetProofRequest,
    GetQueueResponse, GetRequest, GetStatisticsRequest, GetStatisticsResponse, HandlingCode,
    ListInboxRequest, ListOutboxRequest, Precedence, RequeueRequest, RespondRequest, WatchRequest,
};
use crate::runtime::context::NodeContext;
use crate::store::StoreError;
use crate::trust::tls::GuardedStream;
use form::{Form, FormTokens};
use pages::Frame;
use strings::Catalogue;

/// Messages a listing page shows at most.
const LIST_LIMIT: u32 = 500;

/// Only this node, no inline script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The console of one node.
struct Console {
    context: Arc<NodeContext>,
    desk: Arc<Desk>,
    tokens: FormTokens,
    history: Arc<history::QueueHistory>,
}

type Shared = Arc<Console>;

/// Serves the console on `listener` until `stop`, with the desk listener's TLS server side
/// (`desk_tls`: the same certificate, local CA and client CRL, reloaded with it), calling the
/// node's `desk`.
pub async fn serve(
    listener: TcpListener,
    desk_tls: Arc<crate::trust::tls::ReloadableServer>,
    admission: Arc<crate::trust::admission::Admission>,
    desk: Arc<Desk>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let tokens =
        FormTokens::new().map_err(|_| std::io::Error::other("no random bytes for the form token key"))?;
    let context = Arc::clone(desk.context());
    let history = Arc::new(history::QueueHistory::default());
    let sampler = history::sample(Arc::clone(&context), Arc::clone(&history), stop.clone());
    let console = Arc::new(Console { context, desk, tokens, history });
    let incoming = crate::trust::tls::incoming_console(listener, desk_tls, admission, stop.clone(), &tasks);
    let panics = crate::runtime::catch_panic::CatchPanicLayer::new(
        "console",
        crate::runtime::catch_panic::PanicAnswer::Http,
        console.context.metrics.panics.clone(),
    );
    let app = router(console).layer(panics).into_make_service_with_connect_info::<Browser>();
    let server =
        axum::serve(TlsListener { incoming, local }, app).with_graceful_shutdown(stop.cancelled_owned());
    let (served, ()) = tokio::join!(server.into_future(), sampler);
    served
}

/// The message page and the inbox rows of `message` as an officer of node `node` sees them, in
/// English: the pure rendering the console serves, for the property tests (whatever a stored
/// message holds, rendering it must not panic).
pub fn render_for_officer(
    node: &str,
    message: &crate::proto::Message,
    replies: &[crate::proto::Message],
) -> [String; 2] {
    let frame = Frame {
        strings: &strings::ENGLISH,
        node,
        name: Some("officer"),
        role: Some(crate::domain::access::Role::Officer),
        token: "token",
    };
    [
        pages::message(&frame, message, replies, None, None),
        pages::inbox_rows(&frame, std::slice::from_ref(message)),
    ]
}

/// The largest new-request form: every attachment an envelope may carry, and the fields.
fn form_body_limit(limits: &crate::config::Limits) -> usize {
    usize::try_from(limits.max_envelope_attachment_bytes).unwrap_or(usize::MAX).saturating_add(4 << 20)
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route("/inbox", get(inbox))
        .route("/inbox/rows", get(inbox_rows))
        .route("/outbox", get(outbox))
        .route("/message/{id}", get(message))
        .route("/message/{id}/{action}", post(act))
        .route("/message/{id}/attachment/{sha256}", get(attachment))
        // The new-request form may carry its attachments (multipart): room for them.
        .route(
            "/new",
            get(new_form).post(new_submit).layer(axum::extract::DefaultBodyLimit::max(form_body_limit(
                &console.desk.context().config.limits,
            ))),
        )
        .route("/network", get(network))
        .route("/print/{id}", get(case_print))
        .route("/statistics", get(statistics))
        .route("/expiring", get(expiring))
        .route("/events", get(events))
        .route("/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/assets/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// The accepted TLS connections as an axum listener.
struct TlsListener {
    incoming: ReceiverStream<Result<GuardedStream, std::io::Error>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let info = tonic::transport::server::Connected::connect_info(&stream);
                    let remote = info.get_ref().remote_addr().unwrap_or(self.local);
                    return (stream, remote);
                }
                Some(Err(_)) => continue,
                // The accept loop ended because the node is stopping; graceful shutdown ends us.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The browser's side of a connection, read once per connection: its leaf certificate (DER) and
/// the identity it names. The TLS configuration requires a certificate, so an empty one only
/// ever stands for "none", which no token matches and which names nobody.
#[derive(Clone)]
struct Browser {
    certificate: Arc<[u8]>,
    /// What the certificate names, as a gRPC call with it would have it.
    identity: Option<Identity>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Browser {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        // The TLS stream exposes its handshake's peer certificates only as its connect info.
        let info = tonic::transport::server::Connected::connect_info(stream.io());
        let certificate = info.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec()));
        let certificate: Arc<[u8]> = certificate.unwrap_or_default().into();
        let identity = identity_of_cert(&certificate).ok();
        Browser { certificate, identity }
    }
}

/// Who the browser is, for showing; the desk API decides what it may do.
struct Viewer {
    name: Option<String>,
    role: Option<crate::domain::access::Role>,
    token: String,
    strings: &'static Catalogue,
}

impl Console {
    fn viewer(&self, browser: &Browser, headers: &HeaderMap) -> Viewer {
        let (name, role) = match self.desk.client_role(browser.identity.as_ref()) {
            Ok((name, role)) => (Some(name), role),
            // Pages then show nobody signed in; every desk call is refused with the reason.
            Err(_) => (None, None),
        };
        let language = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let token = self.tokens.token(&browser.certificate);
        Viewer { name, role, token, strings: strings::catalogue(language) }
    }

    /// The browser as a desk caller, if its certificate's role may make `action` (the desk
    /// records a refusal in the audit log).
    fn caller(&self, browser: &Browser, action: Action) -> Result<Caller, DeskError> {
        self.desk.authorize(browser.identity.clone(), action)
    }
}

impl Viewer {
    fn frame<'a>(&'a self, node: &'a str) -> Frame<'a> {
        Frame { strings: self.strings, node, name: self.name.as_deref(), role: self.role, token: &self.token }
    }
}

/// The HTTP status of a desk refusal: the console's one mapping of [`DeskError`].
fn http_status(error: &DeskError) -> StatusCode {
    match error {
        DeskError::Forbidden(_) => StatusCode::FORBIDDEN,
        DeskError::NotFound(_) => StatusCode::NOT_FOUND,
        DeskError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        DeskError::Invalid(field) if field.over_limit => StatusCode::PAYLOAD_TOO_LARGE,
        DeskError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeskError::Lifecycle { .. }
        | DeskError::WrongMessage(_)
        | DeskError::AlreadyExists(_)
        | DeskError::PeerCannotRead(_) => StatusCode::CONFLICT,
        DeskError::Store(store) if store_unavailable(store) => StatusCode::SERVICE_UNAVAILABLE,
        DeskError::Store(_) | DeskError::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether the store failed to write for now (and may work again), rather than being damaged.
fn store_unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Sled(_) | StoreError::Io(_) | StoreError::Recovering(_))
}

/// What a refusal page says: the desk's own words, and for a store that cannot write right now,
/// what the officer should do.
fn refusal_text(error: &DeskError) -> String {
    match error {
        DeskError::Store(store) if store_unavailable(store) => format!(
            "the node cannot write its store right now ({store}); this action was not confirmed as stored: \
             retry later (after a new request, check the outbox first: the store keeps whole messages or nothing)"
        ),
        other => other.to_string(),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

impl Console {
    fn node(&self) -> String {
        self.context.code().to_string()
    }

    fn refused(&self, viewer: &Viewer, error: &DeskError) -> Response {
        let node = self.node();
        html(http_status(error), pages::refusal(&viewer.frame(&node), &refusal_text(error)))
    }

    /// The refusal of a POST whose form token is not this certificate's, or that another site's page
    /// made (an `Origin` that is not this console).
    fn post_refusal(
        &self,
        browser: &Browser,
        headers: &HeaderMap,
        form: &Form,
        viewer: &Viewer,
    ) -> Option<Response> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let foreign_origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|origin| origin != format!("https://{host}"));
        if foreign_origin || !self.tokens.verify(&browser.certificate, form.get("csrf")) {
            let node = self.node();
            tracing::warn!(client = ?viewer.name, "console POST refused: form token missing or wrong, or foreign origin");
            return Some(html(
                StatusCode::FORBIDDEN,
                pages::refusal(&viewer.frame(&node), viewer.strings.csrf_refused),
            ));
        }
        None
    }
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // "same-origin", not "no-referrer": with the latter, browsers send `Origin: null` on the
    // console's own form posts, which the origin check would then refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The search and page of a listing's query string (`q`, `case`, `peer`, `page`).
fn list_search(query: Option<&str>) -> pages::ListSearch {
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    pages::ListSearch {
        text: form.get("q").trim().to_owned(),
        case_reference: form.get("case").trim().to_owned(),
        peer: form.get("peer").trim().to_ascii_uppercase(),
        page: form.get("page").trim().to_owned(),
    }
}

async fn list_inbox(
    console: &Console,
    browser: &Browser,
    search: &pages::ListSearch,
) -> Result<(Vec<crate::proto::Message>, String), DeskError> {
    let caller = console.caller(browser, Action::ListInbox)?;
    let request = ListInboxRequest {
        limit: LIST_LIMIT,
        text: search.text.clone(),
        case_reference: search.case_reference.clone(),
        peer: search.peer.clone(),
        page_token: search.page.clone(),
        ..Default::default()
    };
    let page = console.desk.list_inbox(&caller, request).await?;
    let mut messages = page.messages;
    pages::sort_for_desk(&mut messages);
    Ok((messages, page.next_page_token))
}

async fn inbox(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let search = list_search(query.as_deref());
    match list_inbox(&console, &browser, &search).await {
        Ok((messages, next)) => {
            html(StatusCode::OK, pages::inbox(&viewer.frame(&console.node()), &messages, &search, &next))
        }
        Err(error) => console.refused(&viewer, &error),
    }
}

async fn inbox_rows(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let search = list_search(query.as_deref());
    match list_inbox(&console, &browser, &search).await {
        Ok((messages, _)) => {
            html(StatusCode::OK, pages::inbox_rows(&viewer.frame(&console.node()), &messages))
        }
        Err(error) => (http_status(&error), refusal_text(&error)).into_response(),
    }
}

async fn outbox(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let search = list_search(query.as_deref());
    let request = ListOutboxRequest {
        limit: LIST_LIMIT,
        text: search.text.clone(),
        case_reference: search.case_reference.clone(),
        peer: search.peer.clone(),
        page_token: search.page.clone(),
        ..Default::default()
    };
    let listed = async {
        let caller = console.caller(&browser, Action::ListOutbox)?;
        console.desk.list_outbox(&caller, request).await
    };
    match listed.await {
        Ok(page) => html(
            StatusCode::OK,
            pages::outbox(&viewer.frame(&console.node()), &page.messages, &search, &page.next_page_token),
        ),
        Err(error) => console.refused(&viewer, &error),
    }
}

async fn message_page(
    console: &Console,
    browser: &Browser,
    viewer: &Viewer,
    id: String,
    refusal: Option<&DeskError>,
) -> Response {
    let read = async {
        let caller = console.caller(browser, Action::Get)?;
        console.desk.get(&caller, GetRequest { id }).await
    };
    match read.await {
        Ok(response) => {
            let message = response.message.unwrap_or_default();
            let refusal_text = refusal.map(refusal_text);
            // Who to call about it, from the directory: for the node's own staff (those who may
            // read its inbox: officers and operators), not for agencies, which go through them.
            let peer = console
                .caller(browser, Action::ListInbox)
                .ok()
                .and_then(|caller| console.desk.peer(&caller, crate::store::peer_of(&message)));
            let page = pages::message(
                &viewer.frame(&console.node()),
                &message,
                &response.replies,
                peer.as_ref(),
                refusal_text.as_deref(),
            );
            html(refusal.map_or(StatusCode::OK, http_status), page)
        }
        // A refused action on a message the caller may not even read: the action's refusal.
        Err(error) => console.refused(viewer, refusal.unwrap_or(&error)),
    }
}

async fn message(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    message_page(&console, &browser, &viewer, id, None).await
}

/// The message page's buttons: each a desk API call; success goes back to the message page.
async fn act(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let form = Form::parse(&body);
    if let Some(refused) = console.post_refusal(&browser, &headers, &form, &viewer) {
        return refused;
    }
    if let Some(asked) = form::follow_up(&action, &form) {
        let text = form.get("text").replace("\r\n", "\n");
        return match follow_up(&console, &browser, &id, asked, text).await {
            Ok(()) => Redirect::to(&format!("/message/{}", percent_path(&id))).into_response(),
            Err(error) => message_page(&console, &browser, &viewer, id, Some(&error)).await,
        };
    }
    let Some(button) = Button::of(&action, &id, &form) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let pressed = async {
        let caller = console.caller(&browser, button.action())?;
        button.press(&console.desk, &caller).await
    };
    match pressed.await {
        Ok(()) => Redirect::to(&format!("/message/{}", percent_path(&id))).into_response(),
        Err(error) => message_page(&console, &browser, &viewer, id, Some(&error)).await,
    }
}

/// The follow-up forms of a preservation this node sent ("Ask for an extension", "MLA request
/// sent"): the request the command line's `extend` and `mla-sent` make (`domain::follow_up`),
/// read and submitted as the browser's caller. A refusal stores nothing.
async fn follow_up(
    console: &Console,
    browser: &Browser,
    id: &str,
    asked: Result<FollowUp, FieldError>,
    text: String,
) -> Result<(), DeskError> {
    let caller = console.caller(browser, Action::Submit)?;
    let asked = asked?;
    let reader = console.caller(browser, Action::Get)?;
    let case = console.desk.get(&reader, GetRequest { id: id.to_owned() }).await?;
    let request = crate::domain::follow_up::request(&case.message.unwrap_or_default(), asked, text).map_err(
        |error| match error {
            FollowUpError::NotSentPreservation(what) => {
                DeskError::WrongMessage(format!("{what} is not a preservation request this node sent"))
            }
            FollowUpError::Invalid(field) => DeskError::Invalid(field),
        },
    )?;
    // No client_request_id: a browser never repeats a POST by itself.
    console.desk.submit(&caller, request).await.map(drop)
}

/// A button of the message page, with the desk request its form makes.
enum Button {
    Acknowledge(AcknowledgeRequest),
    Dispute(DisputePrecedenceRequest),
    // Boxed: a response with its typed outcome is several times larger than the other requests.
    Respond(Box<RespondRequest>),
    Cancel(CancelRequest),
    Requeue(RequeueRequest),
    Close(crate::proto::CloseCaseRequest),
}

impl Button {
    /// The button `name` (the last segment of the form's path) on message `id`, if there is one.
    fn of(name: &str, id: &str, form: &Form) -> Option<Self> {
        let id = id.to_owned();
        Some(match name {
            "acknowledge" => Self::Acknowledge(AcknowledgeRequest { id, note: form.get("note").to_owned() }),
            "dispute" => {
                let precedence = Precedence::from_str_name(&format!("PRECEDENCE_{}", form.get("precedence")))
                    .unwrap_or(Precedence::Unspecified);
                Self::Dispute(DisputePrecedenceRequest {
                    id,
                    precedence: precedence as i32,
                    reason: form.get("reason").to_owned(),
                })
            }
            // Browsers send CRLF line ends; the stored text keeps plain LF.
            "respond" => Self::Respond(Box::new(RespondRequest {
                id,
                text: form.get("text").replace("\r\n", "\n"),
                // "" (the request's conditions) is HANDLING_CODE_UNSPECIFIED.
                handling_code: HandlingCode::from_str_name(form.get("handling_code")).unwrap_or_default()
                    as i32,
                handling_restrictions: form.get("handling_restrictions").replace("\r\n", "\n"),
                attachments: Vec::new(),
                outcome: form::outcome(form),
            })),
            "cancel" => Self::Cancel(CancelRequest { id, reason: form.get("reason").to_owned() }),
            "requeue" => Self::Requeue(RequeueRequest { id, expires_at: None }),
            "close" => {
                Self::Close(crate::proto::CloseCaseRequest { id, reason: form.get("reason").to_owned() })
            }
            _ => return None,
        })
    }

    /// The desk call it makes.
    fn action(&self) -> Action {
        match self {
            Self::Acknowledge(_) => Action::Acknowledge,
            Self::Dispute(_) => Action::DisputePrecedence,
            Self::Respond(_) => Action::Respond,
            Self::Cancel(_) => Action::Cancel,
            Self::Requeue(_) => Action::Requeue,
            Self::Close(_) => Action::CloseCase,
        }
    }

    /// Makes the call as `caller` (authorized for [`Button::action`]).
    async fn press(self, desk: &Desk, caller: &Caller) -> Result<(), DeskError> {
        match self {
            Self::Acknowledge(request) => desk.acknowledge(caller, request).await.map(drop),
            Self::Dispute(request) => desk.dispute_precedence(caller, request).await.map(drop),
            Self::Respond(request) => desk.respond(caller, *request).await.map(drop),
            Self::Cancel(request) => desk.cancel(caller, request).await.map(drop),
            Self::Requeue(request) => desk.requeue(caller, request).await.map(drop),
            Self::Close(request) => desk.close_case(caller, request).await.map(drop),
        }
    }
}

/// A path segment with everything but unreserved characters escaped.
/// `segment` percent-encoded for a path segment or a query string value (unreserved characters
/// kept).
fn percent_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn destinations(console: &Console) -> Vec<(String, String)> {
    console
        .context
        .peers_listed()
        .iter()
        .map(|entry| {
            let label = if entry.name.is_empty() {
                entry.code.to_string()
            } else {
                format!("{} – {}", entry.code, entry.name)
            };
            (entry.code.to_string(), label)
        })
        .collect()
}

async fn new_form(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let page =
        pages::new_request(&viewer.frame(&console.node()), &destinations(&console), &Form::default(), &[]);
    html(StatusCode::OK, page)
}

/// The new-request form: a `Submit` call; a refusal naming a field is shown next to it.
async fn new_submit(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The form is multipart when it carries files (the page's form), urlencoded otherwise.
    let (form, files) = form::parse_multipart(content_type, &body, "attachments")
        .unwrap_or_else(|| (Form::parse(&body), Vec::new()));
    if let Some(refused) = console.post_refusal(&browser, &headers, &form, &viewer) {
        return refused;
    }
    let node = console.node();
    let again = |status: StatusCode, errors: Vec<(String, String)>| {
        html(status, pages::new_request(&viewer.frame(&node), &destinations(&console), &form, &errors))
    };
    let mut request = match form::submit_request(&form) {
        Ok(request) => request,
        Err(error) => return again(StatusCode::UNPROCESSABLE_ENTITY, vec![(error.field, error.message)]),
    };
    let submitted = async {
        let caller = console.caller(&browser, Action::Submit)?;
        if !files.is_empty() {
            let uploader = console.caller(&browser, Action::UploadAttachment)?;
            for file in files {
                let piece = crate::proto::UploadAttachmentRequest {
                    name: file.name,
                    media_type: file.media_type,
                    data: file.data,
                };
                let pieces = tokio_stream::iter([Ok::<_, DeskError>(piece)]);
                request.attachments.push(console.desk.upload_attachment(&uploader, pieces).await?);
            }
        }
        console.desk.submit(&caller, request).await
    };
    match submitted.await {
        Ok(message) => {
            let id = message.envelope.map(|e| e.id).unwrap_or_default();
            Redirect::to(&format!("/message/{}", percent_path(&id))).into_response()
        }
        Err(error) => {
            let status = http_status(&error);
            match error {
                // Shown next to the field it names (above the form if it names none of its fields).
                DeskError::Invalid(field_error) => {
                    again(status, vec![(field_error.field, field_error.message)])
                }
                other => console.refused(&viewer, &other),
            }
        }
    }
}

/// The statistics page: the period comes as dates in the query (`from`, `to`), each optional.
async fn statistics(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let node = console.node();
    let frame = viewer.frame(&node);
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let (from, to) = (form.get("from").trim(), form.get("to").trim());
    let page =
        |status: StatusCode, figures: Option<&GetStatisticsResponse>, errors: Vec<(String, String)>| {
            html(status, pages::statistics(&frame, from, to, figures, &errors))
        };
    let bound = |field: &str, text: &str| match text {
        "" => Ok(None),
        text => crate::desk::statistics::period_bound(text).map(Some).map_err(|e| (field.to_owned(), e)),
    };
    let request = match (bound("from", from), bound("to", to)) {
        (Ok(from), Ok(to)) => GetStatisticsRequest { from, to },
        (Err(error), _) | (_, Err(error)) => {
            return page(StatusCode::UNPROCESSABLE_ENTITY, None, vec![error]);
        }
    };
    let read = async {
        let caller = console.caller(&browser, Action::GetStatistics)?;
        console.desk.statistics(&caller, request).await
    };
    match read.await {
        Ok(figures) => page(StatusCode::OK, Some(&figures), Vec::new()),
        Err(DeskError::Invalid(error)) => {
            page(StatusCode::UNPROCESSABLE_ENTITY, None, vec![(error.field, error.message)])
        }
        Err(error) => console.refused(&viewer, &error),
    }
}

/// The preservation clock: preservations by days left, optionally only those lapsing `within`.
async fn expiring(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let node = console.node();
    let frame = viewer.frame(&node);
    let form = Form::parse(query.unwrap_or_default().as_bytes());
    let within_text = form.get("within").trim().to_owned();
    let now = console.context.clock.now();
    let within = match within_text.as_str() {
        "" => None,
        text => match humantime::parse_duration(text) {
            Ok(within) => Some(within),
            Err(error) => {
                let error = format!("{error}: a duration such as 14d");
                let page = pages::preservations(&frame, &within_text, &[], now, Some(&error));
                return html(StatusCode::UNPROCESSABLE_ENTITY, page);
            }
        },
    };
    let read = async {
        let caller = console.caller(&browser, Action::ListPreservations)?;
        let within = within.map(|d| prost_types::Duration::try_from(d).unwrap_or_default());
        console.desk.list_preservations(&caller, crate::proto::ListPreservationsRequest { within }).await
    };
    match read.await {
        Ok(messages) => {
            html(StatusCode::OK, pages::preservations(&frame, &within_text, &messages, now, None))
        }
        Err(error) => console.refused(&viewer, &error),
    }
}

/// The printable view of the case a request starts: the request, its replies, and each
/// envelope's proof (read as `GetProof` is: by whoever may `Get` the message).
async fn case_print(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let read = async {
        let caller = console.caller(&browser, Action::Get)?;
        let case = console.desk.get(&caller, GetRequest { id }).await?;
        let message = case.message.unwrap_or_default();
        let mut proofs = Vec::new();
        for each in std::iter::once(&message).chain(&case.replies) {
            let id = each.envelope.as_ref().map(|e| e.id.clone()).unwrap_or_default();
            let proof = match console.desk.get_proof(&caller, GetProofRequest { id }).await {
                Ok(proof) => Some(proof),
                // Stored before envelopes were signed: printed as such.
                Err(DeskError::WrongMessage(_)) => None,
                Err(error) => return Err(error),
            };
            proofs.push(proof);
        }
        Ok((message, case.replies, proofs))
    };
    match read.await {
        Ok((message, replies, proofs)) => {
            let request = (&message, proofs.first().and_then(Option::as_ref));
            let replies: Vec<pages::WithProof<'_>> =
                replies.iter().zip(proofs.iter().skip(1).map(Option::as_ref)).collect();
            html(StatusCode::OK, pages::case_print(&viewer.frame(&console.node()), request, &replies))
        }
        Err(error) => console.refused(&viewer, &error),
    }
}

/// An attachment's content, through the desk's `DownloadAttachment` (so roles and an agency's
/// scope apply), as a download the browser never renders.
async fn attachment(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
    Path((id, digest)): Path<(String, String)>,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let Ok(sha256) = hex::decode(&digest) else { return StatusCode::NOT_FOUND.into_response() };
    let read = async {
        let caller = console.caller(&browser, Action::DownloadAttachment)?;
        console.desk.download_attachment(&caller, DownloadAttachmentRequest { id, sha256 }).await
    };
    match read.await {
        Ok(pieces) => {
            let body = axum::body::Body::from_stream(pieces.map(|piece| {
                piece.map(|p| Bytes::from(p.data)).map_err(|e| std::io::Error::other(e.to_string()))
            }));
            let name = format!("attachment; filename=\"{}\"", &digest[..digest.len().min(64)]);
            let disposition = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment"));
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                ],
                body,
            )
                .into_response()
        }
        Err(error) => console.refused(&viewer, &error),
    }
}

async fn network(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let peers = match console.caller(&browser, Action::ListPeers) {
        Ok(caller) => console.desk.list_peers(&caller),
        Err(error) => return console.refused(&viewer, &error),
    };
    let read_queue = async {
        let caller = console.caller(&browser, Action::GetQueue)?;
        console.desk.get_queue(&caller).await
    };
    let queue = match read_queue.await {
        Ok(peers) => GetQueueResponse { peers },
        Err(error) => return console.refused(&viewer, &error),
    };
    let now = std::time::SystemTime::now();
    // The sampled hour, ending with the depth just read.
    let chart = |peer: &str| {
        let label = format!("{} {peer}", viewer.strings.queue_chart);
        let mut samples = console.history.of(peer);
        if let Some(q) = queue.peers.iter().find(|q| q.peer == peer) {
            samples.push((now, q.flash + q.immediate + q.priority + q.routine));
        }
        history::chart(&samples, now, &label)
    };
    html(StatusCode::OK, pages::network(&viewer.frame(&console.node()), &peers, &queue, &chart))
}

/// The node's lifecycle events from now on, as Server-Sent Events (`event: change`, data the
/// event as JSON), from the desk's `watch`, so an agency hears only of its own messages.
async fn events(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let watch = async {
        let caller = console.caller(&browser, Action::Watch)?;
        console.desk.watch(&caller, WatchRequest { after_sequence: None }).await
    };
    let stream = match watch.await {
        Ok(watching) => watching.events,
        Err(error) => return console.refused(&viewer, &error),
    };
    // A store error ends the stream; the browser's EventSource reconnects by itself.
    let events = stream.map_while(|event| event.ok()).map(|event| {
        Ok::<_, Infallible>(
            SseEvent::default().event("change").data(crate::domain::json::event_json(&event).to_string()),
        )
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::FieldError;

    #[test]
    fn desk_refusals_have_the_http_status_of_what_went_wrong() {
        let cases = [
            (DeskError::Forbidden("client 'x' (auditor) may not call Submit".into()), StatusCode::FORBIDDEN),
            (DeskError::NotFound("0".into()), StatusCode::NOT_FOUND),
            (DeskError::Busy("over limits.desk_calls_per_second".into()), StatusCode::TOO_MANY_REQUESTS),
            (DeskError::Invalid(FieldError::new("subject", "required")), StatusCode::UNPROCESSABLE_ENTITY),
            (
                DeskError::Invalid(FieldError::over_limit("subject", "too long")),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (DeskError::WrongMessage("not a request this node sent".into()), StatusCode::CONFLICT),
            (DeskError::Store(StoreError::Recovering("disk full".into())), StatusCode::SERVICE_UNAVAILABLE),
            (
                DeskError::Store(StoreError::Io(std::io::Error::other("sync"))),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (DeskError::Store(StoreError::Malformed("no envelope")), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (error, status) in cases {
            assert_eq!(http_status(&error), status, "{error}");
        }
    }

    #[test]
    fn a_store_that_cannot_write_is_explained_with_what_to_do() {
        let text = refusal_text(&DeskError::Store(StoreError::Recovering("disk full".into())));
        assert!(text.contains("cannot write its store right now") && text.contains("retry later"), "{text}");
        let field = refusal_text(&DeskError::Invalid(FieldError::new("subject", "required")));
        assert_eq!(field, "subject: required");
    }
}
