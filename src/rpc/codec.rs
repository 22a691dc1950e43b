//! How a gRPC message that cannot be taken is refused: the protobuf codec of every stub generated
//! from `proto/` (prost's, except that a message that does not decode — malformed protobuf, a
//! string field that is not UTF-8 — is INVALID_ARGUMENT naming the field, where prost's codec
//! answers INTERNAL, a server bug), and the status of a message over a listener's decode limit
//! (RESOURCE_EXHAUSTED, as gRPC's own implementations say, where tonic says OUT_OF_RANGE).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// [`ProstCodec`] with bad input reported as the caller's fault (`build.rs` names it as the
/// codec of the generated clients and servers).
pub struct ProtoCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self { inner: ProstCodec::default() }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder { buffer_settings: self.inner.decoder().buffer_settings(), message: PhantomData }
    }
}

/// Decodes `U`; a decode error becomes INVALID_ARGUMENT.
pub struct ProtoDecoder<U> {
    buffer_settings: BufferSettings,
    message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| super::status::malformed_request(&decode_error_message(&error)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}

/// What a person reads when a message does not decode; prost's error names the field
/// (`Envelope.subject: invalid string value: data is not UTF-8 encoded`).
pub fn decode_error_message(error: &prost::DecodeError) -> String {
    format!("malformed protobuf message (fields are protobuf, strings UTF-8): {error}")
}

/// tonic's refusal of a request over the decode limit, which it answers with OUT_OF_RANGE
/// (trailers-only, so the status is in the response headers).
const DECODE_LIMIT_MESSAGE: &str = "decoded message length too large";

/// Turns tonic's OUT_OF_RANGE for a request over the listener's decode limit into
/// RESOURCE_EXHAUSTED naming the limits, like every other size refusal of this node. Both gRPC
/// listeners map their responses through it (`node`).
pub fn oversized_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|code| code == "11");
    // tonic percent-encodes the message, spaces included; the rest of its text is plain ASCII.
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default();
    let message = message.replace("%20", " ");
    if out_of_range && message.contains(DECODE_LIMIT_MESSAGE) {
        let message = format!(
            "request: {message}: over this listener's decode limit (desk: limits.max_envelope_bytes plus 64 KiB; peer: 8 MiB per Deliver batch)"
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(value) = http::HeaderValue::from_str(&message.replace(' ', "%20")) {
            headers.insert("grpc-message", value);
        }
    }
    response
}
