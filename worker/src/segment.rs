//! Visitor segments a worker can know at request time without a cookie: device class (from
//! the User-Agent and client hints), continent (from the platform's request metadata) and a
//! time-of-day bucket (in the visitor's time zone when the platform knows it). Pure: the
//! request's facts are passed in.

/// One segmenting dimension (`SEGMENTS=device,continent,daypart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `mobile`, `tablet` or `desktop`.
    Device,
    /// `af`, `an`, `as`, `eu`, `na`, `oc`, `sa`, or `xx` when unknown.
    Continent,
    /// `night` (0-5 h), `morning` (6-11 h), `afternoon` (12-17 h) or `evening` (18-23 h).
    Daypart,
}

const DEVICES: [&str; 3] = ["mobile", "tablet", "desktop"];
const CONTINENTS: [&str; 8] = ["af", "an", "as", "eu", "na", "oc", "sa", "xx"];
const DAYPARTS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

impl Dimension {
    /// Parses a dimension name.
    pub fn parse(name: &str) -> Option<Dimension> {
        match name {
            "device" => Some(Dimension::Device),
            "continent" => Some(Dimension::Continent),
            "daypart" => Some(Dimension::Daypart),
            _ => None,
        }
    }

    /// The values it takes.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Dimension::Device => &DEVICES,
            Dimension::Continent => &CONTINENTS,
            Dimension::Daypart => &DAYPARTS,
        }
    }
}

/// What a request says about its visitor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// `Sec-CH-UA-Mobile` (`?1` on a phone).
    pub mobile_hint: Option<&'a str>,
    /// The platform's continent code (e.g. `EU`).
    pub continent: Option<&'a str>,
    /// The visitor's local hour (0-23).
    pub local_hour: Option<u32>,
}

/// The device class: the client hint when sent, else the User-Agent's usual markers.
fn device(f: &Facts<'_>) -> &'static str {
    if f.mobile_hint == Some("?1") {
        return "mobile";
    }
    let ua = f.user_agent.unwrap_or("");
    if ua.contains("iPad")
        || ua.contains("Tablet")
        || (ua.contains("Android") && !ua.contains("Mobile"))
    {
        "tablet"
    } else if ua.contains("Mobi") || ua.contains("iPhone") {
        "mobile"
    } else {
        "desktop"
    }
}

fn continent(f: &Facts<'_>) -> &'static str {
    let code = f.continent.unwrap_or("").to_ascii_lowercase();
    CONTINENTS
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("xx")
}

fn daypart(f: &Facts<'_>) -> &'static str {
    DAYPARTS[(f.local_hour.unwrap_or(12).min(23) / 6) as usize]
}

/// The visitor's segment name: each dimension's value, in the configured order, joined by
/// `_` (e.g. `mobile_eu`); at most 3 dimensions, so at most 32 characters.
pub fn segment_of(dims: &[Dimension], f: &Facts<'_>) -> String {
    let parts: Vec<&str> = dims
        .iter()
        .map(|d| match d {
            Dimension::Device => device(f),
            Dimension::Continent => continent(f),
            Dimension::Daypart => daypart(f),
        })
        .collect();
    parts.join("_")
}

/// Whether `name` is a segment these dimensions can produce (anything else in a batch is
/// counted without its segment, so forged names cannot grow the stored state).
pub fn is_known(dims: &[Dimension], name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    parts.len() == dims.len()
        && !dims.is_empty()
        && dims.iter().zip(&parts).all(|(d, p)| d.values().contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const PIXEL: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
    const TAB: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15";

    fn facts(ua: &'static str) -> Facts<'static> {
        Facts {
            user_agent: Some(ua),
            ..Facts::default()
        }
    }

    #[test]
    fn devices_from_user_agents_and_hints() {
        let d = [Dimension::Device];
        assert_eq!(segment_of(&d, &facts(IPHONE)), "mobile");
        assert_eq!(segment_of(&d, &facts(PIXEL)), "mobile");
        assert_eq!(segment_of(&d, &facts(TAB)), "tablet");
        assert_eq!(segment_of(&d, &facts(IPAD)), "tablet");
        assert_eq!(segment_of(&d, &facts(MAC)), "desktop");
        assert_eq!(segment_of(&d, &Facts::default()), "desktop");
        let hinted = Facts {
            mobile_hint: Some("?1"),
            ..facts(MAC)
        };
        assert_eq!(segment_of(&d, &hinted), "mobile");
    }

    #[test]
    fn names_combine_dimensions_and_stay_valid() {
        let all = [Dimension::Device, Dimension::Continent, Dimension::Daypart];
        let f = Facts {
            continent: Some("EU"),
            local_hour: Some(20),
            ..facts(IPHONE)
        };
        assert_eq!(segment_of(&all, &f), "mobile_eu_evening");
        let odd = Facts {
            continent: Some("<script>"),
            local_hour: Some(99),
            ..facts(MAC)
        };
        assert_eq!(segment_of(&all, &odd), "desktop_xx_evening");
        // Every name any request can produce is a valid segment and known.
        for d in DEVICES {
            for c in CONTINENTS {
                for p in DAYPARTS {
                    let name = format!("{d}_{c}_{p}");
                    assert!(bandit::decision::is_valid_segment(&name), "{name}");
                    assert!(is_known(&all, &name));
                }
            }
        }
        assert!(!is_known(&all, "mobile_eu"));
        assert!(!is_known(&[Dimension::Device], "phone"));
        assert!(!is_known(&[], ""));
    }
}
