//! The orders of precedence: the rank of each precedence, which the store writes into the keys of
//! its sending queues, and the order in which a desk works through its inbox.

use crate::proto::{Message, Precedence};

/// The rank of `precedence`, FLASH first: FLASH 1, IMMEDIATE 2, PRIORITY 3, ROUTINE 4.
/// UNSPECIFIED ranks with ROUTINE: an envelope that names no precedence is not urgent.
///
/// Persisted: the store writes this number into the keys of each destination's queue (`o` keys,
/// see `store`), so the numbers must never change; a new precedence needs a new number, and
/// renumbering needs a store migration.
pub fn precedence_rank(precedence: Precedence) -> u8 {
    match precedence {
        Precedence::Flash => 1,
        Precedence::Immediate => 2,
        Precedence::Priority => 3,
        Precedence::Routine | Precedence::Unspecified => 4,
    }
}

/// The key that orders a desk's inbox ([`sort_for_desk`]), smallest first.
pub type DeskOrderKey = (bool, u8, Option<(i64, i32)>);

/// Where `message` goes in a desk's inbox: overdue messages first, then by precedence
/// ([`precedence_rank`], so UNSPECIFIED ties with ROUTINE), then the longest waiting first
/// (oldest `created_at`; a message without one sorts first of its group, as it always has).
pub fn desk_order_key(message: &Message) -> DeskOrderKey {
    let envelope = message.envelope.as_ref();
    let precedence = envelope.map_or(Precedence::Unspecified, |e| e.precedence());
    let created = envelope.and_then(|e| e.created_at).map(|t| (t.seconds, t.nanos));
    (!message.overdue, precedence_rank(precedence), created)
}

/// Sorts `messages` into a desk's inbox order ([`desk_order_key`]); a stable sort, so messages
/// with equal keys keep the order they were listed in.
pub fn sort_for_desk(messages: &mut [Message]) {
    messages.sort_by_key(desk_order_key);
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;
    use crate::proto::Envelope;

    #[test]
    fn ranks_are_the_numbers_in_the_store_keys() {
        assert_eq!(precedence_rank(Precedence::Flash), 1);
        assert_eq!(precedence_rank(Precedence::Immediate), 2);
        assert_eq!(precedence_rank(Precedence::Priority), 3);
        assert_eq!(precedence_rank(Precedence::Routine), 4);
        assert_eq!(precedence_rank(Precedence::Unspecified), 4);
    }

    fn message(id: &str, precedence: Precedence, created: i64, overdue: bool) -> Message {
        Message {
            envelope: Some(Envelope {
                id: id.into(),
                precedence: precedence as i32,
                created_at: Some(Timestamp { seconds: created, nanos: 0 }),
                ..Default::default()
            }),
            overdue,
            ..Default::default()
        }
    }

    fn ids(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.envelope.as_ref().map_or("", |e| e.id.as_str())).collect()
    }

    #[test]
    fn the_desk_sees_overdue_first_then_precedence_then_the_longest_waiting() {
        let mut inbox = vec![
            message("routine-new", Precedence::Routine, 300, false),
            message("unspecified-old", Precedence::Unspecified, 100, false),
            message("flash-new", Precedence::Flash, 400, false),
            message("routine-overdue", Precedence::Routine, 500, true),
            message("priority-old", Precedence::Priority, 50, false),
            message("flash-old", Precedence::Flash, 200, false),
            message("immediate-overdue", Precedence::Immediate, 600, true),
            message("routine-old", Precedence::Routine, 100, false),
        ];
        sort_for_desk(&mut inbox);
        assert_eq!(
            ids(&inbox),
            [
                "immediate-overdue",
                "routine-overdue",
                "flash-old",
                "flash-new",
                "priority-old",
                // UNSPECIFIED ties with ROUTINE: equal keys keep their listed order.
                "unspecified-old",
                "routine-old",
                "routine-new",
            ]
        );
    }

    #[test]
    fn a_message_without_an_envelope_ranks_as_routine() {
        let bare = Message::default();
        assert_eq!(desk_order_key(&bare), (true, 4, None));
        let routine = message("r", Precedence::Routine, 1, false);
        let (_, rank, _) = desk_order_key(&routine);
        assert_eq!(rank, 4);
    }
}
