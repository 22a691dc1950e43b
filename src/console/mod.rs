//! The desk console: the node's HTTPS listener for officers' browsers (TLS 1.3, a client
//! certificate from the node's local CA required, HTTP/1.1 served by axum on our TLS streams).
//!
//! The console decides nothing itself: every page and every action is a call of the desk API's
//! own methods (`DeskApi`), in process, with a request that carries the browser's client
//! certificate exactly as a gRPC call on the desk listener would. So roles, scopes, validation
//! and the lifecycle are checked by the one code that guards the gRPC calls. What the console
//! adds: HTML (`pages`), the words (`strings`), form decoding and the form token that stops
//! cross-site requests (`form`), security headers, and Server-Sent Events from `Watch`.

mod form;
mod history;
mod pages;
pub mod strings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::desk::service::DeskApi;
use crate::domain::identity::{Identity, identity_of_cert};
use crate::proto::desk_service_server::DeskService;
use crate::proto::{
    AcknowledgeRequest, CancelRequest, DisputePrecedenceRequest, GetQueueRequest, GetRequest,
    ListInboxRequest, ListOutboxRequest, ListPeersRequest, Precedence, RequeueRequest, RespondRequest,
    WatchRequest,
};
use crate::runtime::context::NodeContext;
use crate::trust::tls::GuardedStream;
use form::{Form, FormTokens};
use pages::Frame;
use strings::Catalogue;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    desk: DeskApi,
    tokens: FormTokens,
    history: Arc<history::QueueHistory>,
}

type Shared = Arc<Console>;

/// Serves the console on `listener` until `stop`, with the desk listener's TLS server side
/// (`desk_tls`: the same certificate, local CA and client CRL, reloaded with it).
pub async fn serve(
    listener: TcpListener,
    desk_tls: Arc<crate::trust::tls::ReloadableServer>,
    context: Arc<NodeContext>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let tokens =
        FormTokens::new().map_err(|_| std::io::Error::other("no random bytes for the form token key"))?;
    let desk = DeskApi::new(Arc::clone(&context), stop.clone());
    let history = Arc::new(history::QueueHistory::default());
    let sampler = history::sample(Arc::clone(&context), Arc::clone(&history), stop.clone());
    let console = Arc::new(Console { context, desk, tokens, history });
    let incoming = crate::trust::tls::incoming_console(listener, desk_tls, HANDSHAKE_TIMEOUT, stop.clone());
    let app = router(console).into_make_service_with_connect_info::<Browser>();
    let server =
        axum::serve(TlsListener { incoming, local }, app).with_graceful_shutdown(stop.cancelled_owned());
    let (served, ()) = tokio::join!(server.into_future(), sampler);
    served
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route("/inbox", get(inbox))
        .route("/inbox/rows", get(inbox_rows))
        .route("/outbox", get(outbox))
        .route("/message/{id}", get(message))
        .route("/message/{id}/{action}", post(act))
        .route("/new", get(new_form).post(new_submit))
        .route("/network", get(network))
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

/// The browser's side of a connection: its certificates, in the form tonic hands the desk API.
#[derive(Clone)]
struct Browser(TlsConnectInfo<TcpConnectInfo>);

impl Connected<IncomingStream<'_, TlsListener>> for Browser {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Browser(tonic::transport::server::Connected::connect_info(stream.io()))
    }
}

impl Browser {
    /// A desk API request made by this browser's certificate.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.0.clone());
        request
    }

    /// The leaf certificate (DER); the TLS configuration requires one, so an empty slice only
    /// ever stands for "none", which no token matches.
    fn certificate(&self) -> Vec<u8> {
        self.0.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec())).unwrap_or_default()
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
        let certificate = browser.certificate();
        let config = &self.context.config;
        let name = match identity_of_cert(&certificate) {
            Ok(Identity::Client { network, node, name })
                if network == config.network && node == config.code =>
            {
                Some(name)
            }
            _ => None,
        };
        let role = name.as_deref().and_then(|n| config.role_of(n));
        let language = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        Viewer { name, role, token: self.tokens.token(&certificate), strings: strings::catalogue(language) }
    }
}

impl Viewer {
    fn frame<'a>(&'a self, node: &'a str) -> Frame<'a> {
        Frame { strings: self.strings, node, name: self.name.as_deref(), role: self.role, token: &self.token }
    }
}

/// The HTTP status for a desk API refusal.
fn http_status(status: &tonic::Status) -> StatusCode {
    use tonic::Code;
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

impl Console {
    fn node(&self) -> String {
        self.context.code().to_string()
    }

    fn refused(&self, viewer: &Viewer, status: &tonic::Status) -> Response {
        let node = self.node();
        html(http_status(status), pages::refusal(&viewer.frame(&node), status.message()))
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
        if foreign_origin || !self.tokens.verify(&browser.certificate(), form.get("csrf")) {
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

async fn list_inbox(
    console: &Console,
    browser: &Browser,
) -> Result<Vec<crate::proto::Message>, tonic::Status> {
    let request = ListInboxRequest { limit: LIST_LIMIT, ..Default::default() };
    let mut messages = console.desk.list_inbox(browser.request(request)).await?.into_inner().messages;
    pages::sort_for_desk(&mut messages);
    Ok(messages)
}

async fn inbox(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    match list_inbox(&console, &browser).await {
        Ok(messages) => html(StatusCode::OK, pages::inbox(&viewer.frame(&console.node()), &messages)),
        Err(status) => console.refused(&viewer, &status),
    }
}

async fn inbox_rows(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    match list_inbox(&console, &browser).await {
        Ok(messages) => html(StatusCode::OK, pages::inbox_rows(&viewer.frame(&console.node()), &messages)),
        Err(status) => (http_status(&status), status.message().to_owned()).into_response(),
    }
}

async fn outbox(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let request = ListOutboxRequest { limit: LIST_LIMIT, ..Default::default() };
    match console.desk.list_outbox(browser.request(request)).await {
        Ok(response) => html(
            StatusCode::OK,
            pages::outbox(&viewer.frame(&console.node()), &response.into_inner().messages),
        ),
        Err(status) => console.refused(&viewer, &status),
    }
}

async fn message_page(
    console: &Console,
    browser: &Browser,
    viewer: &Viewer,
    id: String,
    refusal: Option<&tonic::Status>,
) -> Response {
    match console.desk.get(browser.request(GetRequest { id })).await {
        Ok(response) => {
            let response = response.into_inner();
            let message = response.message.unwrap_or_default();
            let page = pages::message(
                &viewer.frame(&console.node()),
                &message,
                &response.replies,
                refusal.map(|s| s.message()),
            );
            html(refusal.map_or(StatusCode::OK, http_status), page)
        }
        // A refused action on a message the caller may not even read: the action's refusal.
        Err(status) => console.refused(viewer, refusal.unwrap_or(&status)),
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
    let desk = &console.desk;
    let result = match action.as_str() {
        "acknowledge" => {
            let request = AcknowledgeRequest { id: id.clone(), note: form.get("note").to_owned() };
            desk.acknowledge(browser.request(request)).await.map(drop)
        }
        "dispute" => {
            let precedence = Precedence::from_str_name(&format!("PRECEDENCE_{}", form.get("precedence")))
                .unwrap_or(Precedence::Unspecified);
            let request = DisputePrecedenceRequest {
                id: id.clone(),
                precedence: precedence as i32,
                reason: form.get("reason").to_owned(),
            };
            desk.dispute_precedence(browser.request(request)).await.map(drop)
        }
        "respond" => {
            let request = RespondRequest { id: id.clone(), text: form.get("text").replace("\r\n", "\n") };
            desk.respond(browser.request(request)).await.map(drop)
        }
        "cancel" => {
            let request = CancelRequest { id: id.clone(), reason: form.get("reason").to_owned() };
            desk.cancel(browser.request(request)).await.map(drop)
        }
        "requeue" => {
            desk.requeue(browser.request(RequeueRequest { id: id.clone(), expires_at: None })).await.map(drop)
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/message/{}", percent_path(&id))).into_response(),
        Err(status) => message_page(&console, &browser, &viewer, id, Some(&status)).await,
    }
}

/// A path segment with everything but unreserved characters escaped.
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
    let form = Form::parse(&body);
    if let Some(refused) = console.post_refusal(&browser, &headers, &form, &viewer) {
        return refused;
    }
    let node = console.node();
    let again = |status: StatusCode, errors: Vec<(String, String)>| {
        html(status, pages::new_request(&viewer.frame(&node), &destinations(&console), &form, &errors))
    };
    let request = match form::submit_request(&form) {
        Ok(request) => request,
        Err(error) => return again(StatusCode::UNPROCESSABLE_ENTITY, vec![(error.field, error.message)]),
    };
    match console.desk.submit(browser.request(request)).await {
        Ok(response) => {
            let id = response.into_inner().message.and_then(|m| m.envelope).map(|e| e.id).unwrap_or_default();
            Redirect::to(&format!("/message/{}", percent_path(&id))).into_response()
        }
        Err(status)
            if matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted) =>
        {
            let error = match form::field_of(status.message()) {
                Some((field, message)) => (field.to_owned(), message.to_owned()),
                None => (String::new(), status.message().to_owned()),
            };
            again(http_status(&status), vec![error])
        }
        Err(status) => console.refused(&viewer, &status),
    }
}

async fn network(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let peers = match console.desk.list_peers(browser.request(ListPeersRequest {})).await {
        Ok(peers) => peers.into_inner(),
        Err(status) => return console.refused(&viewer, &status),
    };
    let queue = match console.desk.get_queue(browser.request(GetQueueRequest {})).await {
        Ok(queue) => queue.into_inner(),
        Err(status) => return console.refused(&viewer, &status),
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
/// event as JSON), from the desk API's `Watch`, so an agency hears only of its own messages.
async fn events(
    State(console): State<Shared>,
    ConnectInfo(browser): ConnectInfo<Browser>,
    headers: HeaderMap,
) -> Response {
    let viewer = console.viewer(&browser, &headers);
    let stream = match console.desk.watch(browser.request(WatchRequest { after_sequence: None })).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return console.refused(&viewer, &status),
    };
    // A store error ends the stream; the browser's EventSource reconnects by itself.
    let events = stream.map_while(|event| event.ok()).map(|event| {
        Ok::<_, Infallible>(
            SseEvent::default().event("change").data(crate::domain::json::event_json(&event).to_string()),
        )
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
