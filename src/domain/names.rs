//! The one place that turns proto enum values into the names people and scripts see: `FLASH`,
//! `PRESERVATION`, `REQUEST`, `CONNECTED`. The wire names carry a prefix (`PRECEDENCE_FLASH`) that
//! protobuf style asks for and nobody wants to read.

use crate::proto::{
    ConnectionState, Direction, EnvelopeKind, HandlingCode, MessageState, OutcomeKind, Precedence,
    RequestType,
};

/// A proto enum's value by its short name: the wire name without the enum's prefix.
pub trait ShortName: Copy {
    /// The prefix every wire name of this enum starts with.
    const PREFIX: &'static str;

    /// The wire name (`PRECEDENCE_FLASH`).
    fn wire_name(self) -> &'static str;

    /// The short name (`FLASH`).
    fn short_name(self) -> &'static str {
        let wire = self.wire_name();
        wire.strip_prefix(Self::PREFIX).unwrap_or(wire)
    }
}

macro_rules! short_name {
    ($($kind:ty => $prefix:literal),* $(,)?) => {
        $(impl ShortName for $kind {
            const PREFIX: &'static str = $prefix;
            fn wire_name(self) -> &'static str {
                self.as_str_name()
            }
        })*
    };
}

short_name! {
    Precedence => "PRECEDENCE_",
    RequestType => "REQUEST_TYPE_",
    EnvelopeKind => "ENVELOPE_KIND_",
    HandlingCode => "HANDLING_CODE_",
    Direction => "DIRECTION_",
    MessageState => "MESSAGE_STATE_",
    ConnectionState => "CONNECTION_STATE_",
    OutcomeKind => "OUTCOME_KIND_",
}

/// The outcome kind named `name` (`executed`, `partly-executed`, `OUTCOME_KIND_REFUSED`, any
/// case, `-` for `_`); `None` for an unknown name or UNSPECIFIED.
pub fn outcome_kind_named(name: &str) -> Option<OutcomeKind> {
    let upper = name.trim().to_ascii_uppercase().replace('-', "_");
    let wire = if upper.starts_with(OutcomeKind::PREFIX) {
        upper
    } else {
        format!("{}{upper}", OutcomeKind::PREFIX)
    };
    OutcomeKind::from_str_name(&wire).filter(|k| *k != OutcomeKind::Unspecified)
}

/// The request type named `name`, short (`PRESERVATION`) or wire (`REQUEST_TYPE_PRESERVATION`),
/// in any case; `None` for an unknown name.
pub fn request_type_named(name: &str) -> Option<RequestType> {
    let upper = name.trim().to_ascii_uppercase();
    let wire = if upper.starts_with(RequestType::PREFIX) {
        upper
    } else {
        format!("{}{upper}", RequestType::PREFIX)
    };
    RequestType::from_str_name(&wire)
}

/// The precedence named `name` (`FLASH` or `PRECEDENCE_FLASH`, any case); `None` for an unknown
/// name or UNSPECIFIED.
pub fn precedence_named(name: &str) -> Option<Precedence> {
    let upper = name.trim().to_ascii_uppercase();
    let wire =
        if upper.starts_with(Precedence::PREFIX) { upper } else { format!("{}{upper}", Precedence::PREFIX) };
    Precedence::from_str_name(&wire).filter(|p| *p != Precedence::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_the_wire_prefix() {
        assert_eq!(Precedence::Flash.short_name(), "FLASH");
        assert_eq!(RequestType::Preservation.short_name(), "PRESERVATION");
        assert_eq!(EnvelopeKind::Request.short_name(), "REQUEST");
        assert_eq!(HandlingCode::H2.short_name(), "H2");
        assert_eq!(MessageState::Received.short_name(), "RECEIVED");
        assert_eq!(ConnectionState::Connected.short_name(), "CONNECTED");
        assert_eq!(Direction::Inbound.short_name(), "INBOUND");
    }

    #[test]
    fn request_types_are_found_by_short_or_wire_name() {
        assert_eq!(request_type_named("preservation"), Some(RequestType::Preservation));
        assert_eq!(request_type_named("REQUEST_TYPE_PRESERVATION"), Some(RequestType::Preservation));
        assert_eq!(request_type_named("nonsense"), None);
    }

    #[test]
    fn outcome_kinds_are_found_with_dashes() {
        assert_eq!(outcome_kind_named("partly-executed"), Some(OutcomeKind::PartlyExecuted));
        assert_eq!(outcome_kind_named("OUTCOME_KIND_REFUSED"), Some(OutcomeKind::Refused));
        assert_eq!(outcome_kind_named("unspecified"), None);
        assert_eq!(OutcomeKind::PreservationNotPossible.short_name(), "PRESERVATION_NOT_POSSIBLE");
    }
}
