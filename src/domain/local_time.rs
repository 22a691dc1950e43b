//! Who to call, and when: a peer's local time from the IANA time zone its directory entry lists,
//! and whether a request's language is one of its working languages. An officer whose peer is
//! down reaches for the phone; knowing it is 03:00 there changes what they say.

use std::time::SystemTime;

/// `now` in the IANA time zone `zone`, RFC 3339 with its UTC offset and without fractions
/// ("2026-12-05T08:45:00+01:00"); `None` when the zone is empty or unknown.
pub fn local_time_in(zone: &str, now: SystemTime) -> Option<String> {
    if zone.trim().is_empty() {
        return None;
    }
    let zone = jiff::tz::TimeZone::get(zone.trim()).ok()?;
    let instant = jiff::Timestamp::try_from(now).ok()?;
    let local = instant.to_zoned(zone);
    Some(local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

/// A local time as an officer reads it before dialling: "Sat 08:45 UTC+01:00 (Europe/Paris)";
/// "time zone Mars/Base unknown" when there is no `local_time`; empty when nothing is listed.
pub fn describe(local_time: &str, zone: &str) -> String {
    let civil = local_time.get(..19).and_then(|t| t.parse::<jiff::civil::DateTime>().ok());
    match (civil, local_time.get(19..)) {
        (Some(civil), Some(offset)) => {
            let offset = if offset == "Z" { "+00:00" } else { offset };
            format!("{} UTC{offset} ({zone})", civil.strftime("%a %H:%M"))
        }
        _ if zone.trim().is_empty() => String::new(),
        _ => format!("time zone {zone} unknown"),
    }
}

/// The language's primary subtag, lower case ("fr-CA" → "fr").
fn primary_subtag(tag: &str) -> String {
    tag.trim().split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase()
}

/// Whether `language` (BCP 47) is among `working` (BCP 47), compared by primary subtag, so a
/// request in "fr-CA" suits a desk that lists "fr". An empty list says nothing: it suits.
pub fn suits_working_languages(language: &str, working: &[String]) -> bool {
    let wanted = primary_subtag(language);
    working.is_empty() || working.iter().any(|w| primary_subtag(w) == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn local_time_carries_the_zones_offset_in_winter_and_summer() {
        // 2026-01-15T12:00:00Z and 2026-07-15T12:00:00Z.
        let winter = SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_478_400);
        let summer = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_116_800);
        assert_eq!(local_time_in("Europe/Paris", winter).as_deref(), Some("2026-01-15T13:00:00+01:00"));
        assert_eq!(local_time_in("Europe/Paris", summer).as_deref(), Some("2026-07-15T14:00:00+02:00"));
        assert_eq!(local_time_in("Asia/Ho_Chi_Minh", winter).as_deref(), Some("2026-01-15T19:00:00+07:00"));
        assert_eq!(local_time_in("UTC", winter).as_deref(), Some("2026-01-15T12:00:00+00:00"));
    }

    #[test]
    fn a_local_time_reads_with_its_weekday_offset_and_zone() {
        assert_eq!(
            describe("2026-12-05T08:45:00+01:00", "Europe/Paris"),
            "Sat 08:45 UTC+01:00 (Europe/Paris)"
        );
        assert_eq!(describe("", "Mars/Base"), "time zone Mars/Base unknown");
        assert_eq!(describe("", ""), "");
    }

    #[test]
    fn an_unknown_or_empty_zone_has_no_local_time() {
        assert_eq!(local_time_in("Mars/Olympus_Mons", SystemTime::now()), None);
        assert_eq!(local_time_in("", SystemTime::now()), None);
    }

    #[test]
    fn languages_compare_by_primary_subtag_and_an_empty_list_suits_all() {
        let working = vec!["fr".to_owned(), "en-GB".to_owned()];
        assert!(suits_working_languages("fr-CA", &working));
        assert!(suits_working_languages("EN", &working));
        assert!(!suits_working_languages("de", &working));
        assert!(suits_working_languages("de", &[]));
    }
}
