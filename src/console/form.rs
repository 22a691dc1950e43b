//! What the console's forms send: `application/x-www-form-urlencoded` decoding, the form token
//! that stops cross-site requests, and turning the new-request form into a `SubmitRequest`.
//! Pure apart from the token key's random bytes.

use ring::hmac;

use crate::domain::follow_up::FollowUp;
use crate::domain::validation::FieldError;
use crate::proto::{
    HandlingCode, Outcome, Precedence, PreservationRequest, RequestType, SubmitRequest, TrafficDataDisclosure,
};

/// A decoded form: its fields in the order sent (a name may repeat).
#[derive(Debug, Default, Clone)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// Decodes an urlencoded body or query string (`+` is a space, `%XX` a byte, bad escapes
    /// are kept as they are; invalid UTF-8 becomes U+FFFD).
    pub fn parse(text: &[u8]) -> Self {
        Self(
            text.split(|b| *b == b'&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let mut parts = pair.splitn(2, |b| *b == b'=');
                    let name = decode(parts.next().unwrap_or_default());
                    let value = decode(parts.next().unwrap_or_default());
                    (name, value)
                })
                .collect(),
        )
    }

    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    /// Whether a checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(n, v)| n == name && !v.is_empty())
    }
}

/// A file a `multipart/form-data` form sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFile {
    /// The name the browser gave (its own file name).
    pub name: String,
    /// The media type the browser gave ("" when none).
    pub media_type: String,
    /// The content.
    pub data: Vec<u8>,
}

/// Decodes a `multipart/form-data` body (RFC 7578) sent with `content_type`: its text fields as a
/// [`Form`] and the files of the field `files_field` (those with a file name). `None` when the
/// body is not multipart or does not parse.
pub fn parse_multipart(content_type: &str, body: &[u8], files_field: &str) -> Option<(Form, Vec<SentFile>)> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })?;
    let delimiter = format!("--{boundary}").into_bytes();
    let between = [b"\r\n".as_slice(), &delimiter].concat();
    let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
    let (mut fields, mut files) = (Vec::new(), Vec::new());
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, &between)?;
        let value = &rest[..end];
        rest = &rest[end + between.len()..];
        let (mut name, mut file_name, mut media_type) = (None, None, String::new());
        for line in head.split("\r\n") {
            let Some((header, content)) = line.split_once(':') else { continue };
            if header.trim().eq_ignore_ascii_case("content-disposition") {
                name = disposition_param(content, "name");
                file_name = disposition_param(content, "filename");
            } else if header.trim().eq_ignore_ascii_case("content-type") {
                media_type = content.trim().to_owned();
            }
        }
        match (name?, file_name) {
            (name, Some(file_name)) if name == files_field => {
                // A file input left empty sends a part with an empty file name.
                if !file_name.is_empty() {
                    files.push(SentFile { name: file_name, media_type, data: value.to_vec() });
                }
            }
            (_, Some(_)) => {}
            (name, None) => fields.push((name, String::from_utf8_lossy(value).into_owned())),
        }
    }
    Some((Form(fields), files))
}

/// A quoted parameter of a Content-Disposition header (`name="subject"`).
fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').find_map(|param| {
        let (k, v) = param.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').replace("%22", "\""))
    })
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn decode(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        bytes.push(byte);
                        i += 2;
                    }
                    None => bytes.push(b'%'),
                }
            }
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The form token: an HMAC of the caller's client certificate under a key made when the node
/// starts. A page served to that certificate carries it; another site cannot read it, so a form
/// that another site makes the browser post lacks it and is refused.
pub struct FormTokens {
    key: hmac::Key,
}

impl FormTokens {
    /// A fresh random key.
    pub fn new() -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let bytes: [u8; 32] = ring::rand::generate(&rng)?.expose();
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes) })
    }

    /// The token for the client certificate `certificate` (DER), as hex.
    pub fn token(&self, certificate: &[u8]) -> String {
        hex::encode(hmac::sign(&self.key, certificate).as_ref())
    }

    /// Whether `token` is the one for `certificate` (compared in constant time).
    pub fn verify(&self, certificate: &[u8], token: &str) -> bool {
        let Ok(tag) = hex::decode(token) else { return false };
        hmac::verify(&self.key, certificate, &tag).is_ok()
    }
}

/// The new-request form's fields of the preservation request, by name as in the proto (which
/// is also what the node's validation names in its refusals).
pub const PRESERVATION_TEXT_FIELDS: [&str; 7] = [
    "preservation.requesting_authority",
    "preservation.offence",
    "preservation.facts",
    "preservation.data_to_preserve",
    "preservation.link_to_offence",
    "preservation.custodian_or_location",
    "preservation.necessity",
];

/// The `SubmitRequest` the new-request form describes. What is not filled in is left empty for
/// the node's validation to name; only values that cannot even be carried (a period that is no
/// number) are refused here.
pub fn submit_request(form: &Form) -> Result<SubmitRequest, FieldError> {
    let request_type = RequestType::from_str_name(form.get("request_type")).unwrap_or_default();
    let preservation = if request_type == RequestType::Preservation {
        let text = |name: &str| form.get(name).trim().to_owned();
        let days = match form.get("preservation.preservation_days").trim() {
            "" => 0,
            days => days.parse().map_err(|_| {
                FieldError::new("preservation.preservation_days", "must be a whole number of days")
            })?,
        };
        Some(PreservationRequest {
            requesting_authority: text(PRESERVATION_TEXT_FIELDS[0]),
            offence: text(PRESERVATION_TEXT_FIELDS[1]),
            facts: text(PRESERVATION_TEXT_FIELDS[2]),
            data_to_preserve: text(PRESERVATION_TEXT_FIELDS[3]),
            link_to_offence: text(PRESERVATION_TEXT_FIELDS[4]),
            custodian_or_location: text(PRESERVATION_TEXT_FIELDS[5]),
            necessity: text(PRESERVATION_TEXT_FIELDS[6]),
            mutual_legal_assistance_to_follow: form.checked("preservation.mutual_legal_assistance_to_follow"),
            preservation_days: days,
        })
    } else {
        None
    };
    Ok(SubmitRequest {
        destination: form.get("destination").trim().to_owned(),
        request_type: request_type as i32,
        precedence: Precedence::from_str_name(form.get("precedence")).unwrap_or_default() as i32,
        case_reference: form.get("case_reference").trim().to_owned(),
        subject: form.get("subject").trim().to_owned(),
        // Browsers send CRLF line ends; the stored body keeps plain LF.
        body: form.get("body").replace("\r\n", "\n"),
        language: form.get("language").trim().to_owned(),
        expires_at: None,
        in_reply_to: form.get("in_reply_to").trim().to_owned(),
        attachments: Vec::new(),
        handling_code: HandlingCode::from_str_name(form.get("handling_code")).unwrap_or_default() as i32,
        handling_restrictions: form.get("handling_restrictions").trim().to_owned(),
        preservation,
        // A browser never retries a POST by itself; an officer sees the outcome.
        client_request_id: String::new(),
        exercise: form.checked("exercise"),
        follow_up: None,
    })
}

/// The typed outcome the answer form describes (`None`: text only). Like `submit_request`, it
/// leaves judging to the desk: an unknown kind is sent as UNSPECIFIED and a date that is no date
/// as an impossible time, so the refusal names `outcome.kind` or `outcome.preserved_until`.
pub fn outcome(form: &Form) -> Option<Outcome> {
    let kind = form.get("outcome").trim();
    if kind.is_empty() {
        return None;
    }
    let kind = crate::domain::names::outcome_kind_named(kind).unwrap_or_default();
    let text = |name: &str| form.get(name).trim().to_owned();
    let preserved_until = match form.get("outcome.preserved_until").trim() {
        "" => None,
        day => Some(end_of_day(day).unwrap_or(prost_types::Timestamp { seconds: 0, nanos: -1 })),
    };
    let provider_or_path = text("outcome.traffic_data.provider_or_path");
    let third_state = text("outcome.traffic_data.third_state");
    let traffic_data = (!provider_or_path.is_empty() || !third_state.is_empty())
        .then(|| TrafficDataDisclosure { provider_or_path, third_state, preservation_id: String::new() });
    Some(Outcome {
        kind: kind as i32,
        reference: text("outcome.reference"),
        refusal_grounds: form.get("outcome.refusal_grounds").replace("\r\n", "\n").trim().to_owned(),
        preserved_until,
        forwarded_to: text("outcome.forwarded_to"),
        traffic_data,
    })
}

/// The end of `day` (what `<input type=date>` sends, 2027-03-01), UTC: the time a preservation
/// date stands for, as the command line's `--preserved-until` and `--until` take it.
fn end_of_day(day: &str) -> Option<prost_types::Timestamp> {
    humantime::parse_rfc3339_weak(&format!("{day}T23:59:59Z")).ok().map(crate::domain::timestamp::from_system)
}

/// The follow-up a message page's form `name` describes: "extend" (the new date,
/// `follow_up.extend_until`) or "mla-sent" (`follow_up.mla_reference`); `None` for another form.
/// A date that is no date is refused here, naming the field; the rest is
/// `domain::follow_up`'s to judge.
pub fn follow_up(name: &str, form: &Form) -> Option<Result<FollowUp, FieldError>> {
    Some(match name {
        "extend" => match form.get("follow_up.extend_until").trim() {
            "" => Ok(FollowUp::Extension(None)),
            day => end_of_day(day).map(|until| FollowUp::Extension(Some(until))).ok_or_else(|| {
                FieldError::new("follow_up.extend_until", "not a date: a date such as 2027-03-01")
            }),
        },
        "mla-sent" => Ok(FollowUp::MlaSent(form.get("follow_up.mla_reference").trim().to_owned())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_urlencoded_forms() {
        let form = Form::parse(b"a=1+2&b=%C3%A9t%C3%A9&c=%zz&d&e=50%25&e=x");
        assert_eq!(form.get("a"), "1 2");
        assert_eq!(form.get("b"), "été");
        assert_eq!(form.get("c"), "%zz");
        assert_eq!(form.get("d"), "");
        assert_eq!(form.get("e"), "50%");
        assert_eq!(form.get("missing"), "");
        assert_eq!(Form::parse(b"x=%4").get("x"), "%4");
    }

    #[test]
    fn decodes_multipart_forms_with_their_files() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nline one\r\nline two\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"logs.csv\"\r\nContent-Type: text/csv\r\n\r\n\
a,b\r\n--X\r\n\x00\xff\r\n--XyZ\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"\"\r\n\
Content-Type: application/octet-stream\r\n\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n--XyZ--\r\n";
        let (form, files) =
            parse_multipart("multipart/form-data; boundary=XyZ", body, "attachments").unwrap();
        assert_eq!(form.get("subject"), "line one\r\nline two");
        assert_eq!(form.get("csrf"), "tok");
        assert_eq!(
            files,
            [SentFile {
                name: "logs.csv".into(),
                media_type: "text/csv".into(),
                data: b"a,b\r\n--X\r\n\x00\xff".to_vec()
            }],
            "an empty file input sends nothing"
        );
        assert!(parse_multipart("application/x-www-form-urlencoded", b"a=1", "attachments").is_none());
        assert!(
            parse_multipart("multipart/form-data; boundary=XyZ", b"--XyZ\r\nno end", "attachments").is_none()
        );
    }

    #[test]
    fn tokens_are_bound_to_the_certificate() {
        let tokens = FormTokens::new().unwrap();
        let token = tokens.token(b"certificate A");
        assert!(tokens.verify(b"certificate A", &token));
        assert!(!tokens.verify(b"certificate B", &token));
        assert!(!tokens.verify(b"certificate A", ""));
        assert!(!tokens.verify(b"certificate A", "zz"));
        assert!(!FormTokens::new().unwrap().verify(b"certificate A", &token), "another node start");
    }

    #[test]
    fn the_follow_up_forms_become_follow_ups() {
        let extend = follow_up("extend", &Form::parse(b"follow_up.extend_until=2027-03-01")).unwrap();
        let until = end_of_day("2027-03-01").unwrap();
        assert_eq!(extend, Ok(FollowUp::Extension(Some(until))));
        assert_eq!(
            follow_up("extend", &Form::parse(b"follow_up.extend_until=")),
            Some(Ok(FollowUp::Extension(None)))
        );
        let bad = follow_up("extend", &Form::parse(b"follow_up.extend_until=soon")).unwrap();
        assert_eq!(bad.unwrap_err().field, "follow_up.extend_until");
        let mla = follow_up("mla-sent", &Form::parse(b"follow_up.mla_reference=+MLA-1+")).unwrap();
        assert_eq!(mla, Ok(FollowUp::MlaSent("MLA-1".into())));
        assert!(follow_up("respond", &Form::default()).is_none());
    }

    #[test]
    fn the_form_becomes_a_submit_request() {
        let form = Form::parse(
            b"destination=FR&request_type=REQUEST_TYPE_PRESERVATION&precedence=PRECEDENCE_FLASH\
              &subject=S&preservation.offence=fraud&preservation.preservation_days=90\
              &preservation.mutual_legal_assistance_to_follow=on",
        );
        let request = submit_request(&form).unwrap();
        assert_eq!(request.precedence(), Precedence::Flash);
        let preservation = request.preservation.unwrap();
        assert_eq!(preservation.offence, "fraud");
        assert_eq!(preservation.preservation_days, 90);
        assert!(preservation.mutual_legal_assistance_to_follow);
        let bad =
            Form::parse(b"request_type=REQUEST_TYPE_PRESERVATION&preservation.preservation_days=ninety");
        assert_eq!(submit_request(&bad).unwrap_err().field, "preservation.preservation_days");
    }
}
