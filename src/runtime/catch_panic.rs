//! A panic in one request's handler answers that request and nothing else: INTERNAL on the gRPC
//! listeners, HTTP 500 on the console, counted in `hanoi247_panics_total{listener}` and logged.
//! Without it a panic (a bug, or one bad record reaching a formatter) drops the connection and
//! every stream on it, and the same record breaks the same page again on every load.
//!
//! A tower layer of our own rather than `tower_http::catch_panic`, which is not in the tree: it
//! catches a panic in the inner service's `call` and in every poll of its future. A panic while
//! a streaming body is produced (after the answer's head was sent) is not caught here.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::runtime::metrics::{Labels, labels};

/// What a caught panic answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAnswer {
    /// A gRPC status INTERNAL (a trailers-only answer).
    Grpc,
    /// HTTP 500 with an empty body.
    Http,
}

/// Wraps a listener's service so that a panic answers its request (see the module).
#[derive(Clone)]
pub struct CatchPanicLayer {
    listener: &'static str,
    answer: PanicAnswer,
    panics: Family<Labels, Counter>,
}

impl CatchPanicLayer {
    /// For the listener named `listener` (the metric's label), counting in `panics`.
    pub fn new(listener: &'static str, answer: PanicAnswer, panics: Family<Labels, Counter>) -> Self {
        Self { listener, answer, panics }
    }
}

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner, layer: self.clone() }
    }
}

/// The service [`CatchPanicLayer`] makes.
#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
    layer: CatchPanicLayer,
}

impl CatchPanicLayer {
    /// Counts and logs a caught panic and makes its answer.
    fn caught<R: Default>(&self, payload: &(dyn Any + Send)) -> http::Response<R> {
        self.panics.get_or_create(&labels(&[("listener", self.listener)])).inc();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(listener = self.listener, panic = %what, "a request's handler panicked; answered it as an internal error");
        answer(self.answer)
    }
}

/// The answer to a request whose handler panicked.
pub fn answer<R: Default>(kind: PanicAnswer) -> http::Response<R> {
    let mut response = http::Response::new(R::default());
    match kind {
        PanicAnswer::Grpc => {
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
            // 13 is INTERNAL.
            headers.insert("grpc-status", http::HeaderValue::from_static("13"));
            headers.insert("grpc-message", http::HeaderValue::from_static("internal error"));
        }
        PanicAnswer::Http => *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR,
    }
    response
}

impl<S, B, R> tower::Service<http::Request<B>> for CatchPanic<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let layer = self.layer.clone();
        let mut future = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Box::pin(future),
            Err(payload) => {
                let response = layer.caught(payload.as_ref());
                return Box::pin(std::future::ready(Ok(response)));
            }
        };
        // The handler's state is dropped with its future after a panic: nothing half-done of it
        // is polled again, which is what unwind safety asks.
        Box::pin(std::future::poll_fn(move |cx| {
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(poll) => poll,
                Err(payload) => Poll::Ready(Ok(layer.caught(payload.as_ref()))),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, ServiceExt as _};

    #[tokio::test]
    async fn a_panicking_handler_is_answered_and_counted() {
        let panics = Family::<Labels, Counter>::default();
        for (kind, listener) in [(PanicAnswer::Http, "console"), (PanicAnswer::Grpc, "desk")] {
            let layer = CatchPanicLayer::new(listener, kind, panics.clone());
            let in_future = layer.layer(tower::service_fn(|_: http::Request<()>| async {
                if true {
                    panic!("year 10000");
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("never")))
            }));
            let response = in_future.oneshot(http::Request::new(())).await.unwrap();
            match kind {
                PanicAnswer::Http => assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR),
                PanicAnswer::Grpc => assert_eq!(response.headers()["grpc-status"], "13"),
            }
            let fine = layer.layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("page")))
            }));
            let response = fine.oneshot(http::Request::new(())).await.unwrap();
            assert_eq!((response.status(), response.body().as_str()), (http::StatusCode::OK, "page"));
            assert_eq!(panics.get_or_create(&labels(&[("listener", listener)])).get(), 1);
        }
    }
}
