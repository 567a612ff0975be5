//! What an email says: templates per language and kind (subject, plain text, HTML), filled from
//! the order and its event, and the MIME message built from them with lettre. Pure: no SMTP, no
//! disk besides loading an operator's template directory once at start.
//!
//! Templates are minijinja (Jinja2 syntax); the HTML part is escaped automatically. The built-in
//! set (`adapters/templates/<language>/<kind>.{subject,txt,html}`) is compiled in; an operator's
//! `--templates-dir` with the same layout replaces any of them and may add languages. A contact's
//! language tag picks its templates by exact tag, then by its primary language (`pt` for
//! `pt-BR`), then the default language.

use std::collections::BTreeSet;
use std::path::Path;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use minijinja::Environment;
use proto::v1;
use serde::Serialize;

use crate::tickets::render::money;

/// The kinds of email with templates of their own; a resend uses `tickets`'.
pub const KINDS: &[&str] = &["tickets", "cancelled", "unpaid", "refunded"];
const PARTS: &[&str] = &["subject", "txt", "html"];

macro_rules! builtin {
    ($($lang:literal),*) => {
        &[$(
            ($lang, "tickets", [
                include_str!(concat!("../../templates/", $lang, "/tickets.subject")),
                include_str!(concat!("../../templates/", $lang, "/tickets.txt")),
                include_str!(concat!("../../templates/", $lang, "/tickets.html")),
            ]),
            ($lang, "cancelled", [
                include_str!(concat!("../../templates/", $lang, "/cancelled.subject")),
                include_str!(concat!("../../templates/", $lang, "/cancelled.txt")),
                include_str!(concat!("../../templates/", $lang, "/cancelled.html")),
            ]),
            ($lang, "unpaid", [
                include_str!(concat!("../../templates/", $lang, "/unpaid.subject")),
                include_str!(concat!("../../templates/", $lang, "/unpaid.txt")),
                include_str!(concat!("../../templates/", $lang, "/unpaid.html")),
            ]),
            ($lang, "refunded", [
                include_str!(concat!("../../templates/", $lang, "/refunded.subject")),
                include_str!(concat!("../../templates/", $lang, "/refunded.txt")),
                include_str!(concat!("../../templates/", $lang, "/refunded.html")),
            ]),
        )*]
    };
}

/// (language, kind, [subject, text, html]) of the built-in set.
const BUILTIN: &[(&str, &str, [&str; 3])] = builtin!("en", "pt");

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
    languages: BTreeSet<String>,
    default: String,
}

/// What a template is filled with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fields {
    /// The contact's name, else the customer id.
    pub holder: String,
    pub customer_id: String,
    pub order_id: String,
    pub event_name: String,
    pub venue: String,
    /// The start in the event's time zone, e.g. `Saturday 12 December 2026, 20:00 WET
    /// (UTC+00:00)`.
    pub starts_at: String,
    pub tickets: Vec<TicketLine>,
    pub ticket_count: usize,
    /// What was paid, e.g. `EUR 25.00`.
    pub total: String,
    /// Why it was cancelled.
    pub reason: String,
    /// What was given back, e.g. `EUR 25.00`.
    pub refunded: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TicketLine {
    pub tier: String,
    /// `Section A, row 3, seat 12`; empty for general admission.
    pub seat: String,
}

/// An email ready to be addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// The built-in templates, overlaid with those in `dir` (`<language>/<kind>.<part>`);
    /// `default` must have every kind. An error names the file or template at fault.
    pub fn load(dir: Option<&Path>, default: &str) -> Result<Templates, String> {
        let mut sources: Vec<(String, String)> = Vec::new();
        for (lang, kind, parts) in BUILTIN {
            for (part, text) in PARTS.iter().zip(parts) {
                sources.push((format!("{lang}/{kind}.{part}"), (*text).to_string()));
            }
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| format!("templates directory {}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                if !entry.path().is_dir() {
                    continue;
                }
                let lang = entry.file_name().to_string_lossy().into_owned();
                for kind in KINDS {
                    for part in PARTS {
                        let path = entry.path().join(format!("{kind}.{part}"));
                        match std::fs::read_to_string(&path) {
                            Ok(text) => {
                                let name = format!("{lang}/{kind}.{part}");
                                sources.retain(|(n, _)| n != &name);
                                sources.push((name, text));
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(format!("{}: {e}", path.display())),
                        }
                    }
                }
            }
        }
        let mut env = Environment::new();
        // `.html` templates are escaped as HTML (minijinja's default by name); `.subject` and
        // `.txt` are not.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut languages = BTreeSet::new();
        for (name, text) in sources {
            languages.insert(name.split('/').next().unwrap_or_default().to_string());
            env.add_template_owned(name.clone(), text)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        for kind in KINDS {
            for part in PARTS {
                let name = format!("{default}/{kind}.{part}");
                env.get_template(&name).map_err(|_| {
                    format!("the default language `{default}` has no template {name}")
                })?;
            }
        }
        let templates = Templates {
            env,
            languages,
            default: default.to_string(),
        };
        // Every template must fill from a full set of fields: a typo shows at start, not at the
        // first order of that kind.
        // Every field filled, both kinds of ticket: no branch of a template is left unread.
        let sample = Fields {
            holder: "h".into(),
            customer_id: "c".into(),
            order_id: "o".into(),
            event_name: "e".into(),
            venue: "v".into(),
            starts_at: "s".into(),
            tickets: vec![
                TicketLine {
                    tier: "t".into(),
                    seat: String::new(),
                },
                TicketLine {
                    tier: "t".into(),
                    seat: "s".into(),
                },
            ],
            ticket_count: 2,
            total: "EUR 1.00".into(),
            reason: "r".into(),
            refunded: "EUR 1.00".into(),
        };
        for lang in templates.languages.clone() {
            for kind in KINDS {
                templates.compose(kind, &lang, &sample)?;
            }
        }
        Ok(templates)
    }

    /// The language whose templates serve `tag`.
    pub fn language_for(&self, tag: &str) -> &str {
        if let Some(l) = self.languages.get(tag) {
            return l;
        }
        let primary = tag
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.languages
            .get(&primary)
            .map_or(self.default.as_str(), String::as_str)
    }

    /// The email of `kind` (one of `KINDS`) in the language for `tag`; a part this language
    /// lacks comes from the default language.
    pub fn compose(&self, kind: &str, tag: &str, fields: &Fields) -> Result<Composed, String> {
        let lang = self.language_for(tag);
        let render = |part: &str| -> Result<String, String> {
            let name = format!("{lang}/{kind}.{part}");
            let template = self
                .env
                .get_template(&name)
                .or_else(|_| {
                    self.env
                        .get_template(&format!("{}/{kind}.{part}", self.default))
                })
                .map_err(|e| format!("template {name}: {e}"))?;
            template
                .render(minijinja::value::Serde(fields))
                .map_err(|e| format!("template {name}: {e}"))
        };
        // A subject is one line: a template's newlines never reach the header.
        let subject = render("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Composed {
            subject,
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// A `multipart/mixed` message: the text and HTML as alternatives, then the attachment if any.
/// `message_id` is fixed by the caller (order and kind), so a copy can be told from a second
/// email.
pub fn message(
    from: &Mailbox,
    to: &str,
    message_id: &str,
    composed: &Composed,
    attachment: Option<(String, Vec<u8>)>,
) -> Result<lettre::Message, String> {
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("address `{to}` is refused: {e}"))?;
    let body = MultiPart::alternative()
        .singlepart(SinglePart::plain(composed.text.clone()))
        .singlepart(SinglePart::html(composed.html.clone()));
    let mut mixed = MultiPart::mixed().multipart(body);
    if let Some((name, bytes)) = attachment {
        let pdf = ContentType::parse("application/pdf").expect("a valid content type");
        mixed = mixed.singlepart(Attachment::new(name).body(bytes, pdf));
    }
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(composed.subject.clone())
        .message_id(Some(message_id.to_string()))
        .multipart(mixed)
        .map_err(|e| format!("the message cannot be built: {e}"))
}

/// The event's start in its time zone, as the tickets print it; empty if unknown.
pub fn local_time(t: Option<&proto::Timestamp>, zone: &str) -> String {
    t.and_then(|t| {
        let ms = t.seconds.saturating_mul(1_000);
        crate::tickets::render::local_start_text(ms, zone)
    })
    .unwrap_or_default()
}

/// The fields of an order's email; `event` may be the default (never read).
pub fn fields(order: &v1::Order, event: &v1::Event) -> Fields {
    let holder = crate::tickets::holder(order);
    let tier_name = |code: &str| {
        event
            .tiers
            .iter()
            .find(|t| t.code == code)
            .map_or_else(|| code.to_string(), |t| t.name.clone())
    };
    let tickets: Vec<TicketLine> = order
        .tickets
        .iter()
        .map(|t| TicketLine {
            tier: tier_name(&t.tier_code),
            seat: t.seat.as_ref().map_or_else(String::new, |s| {
                format!("section {}, row {}, seat {}", s.section, s.row, s.number)
            }),
        })
        .collect();
    Fields {
        holder,
        customer_id: order.customer_id.clone(),
        order_id: order.order_id.clone(),
        event_name: if event.name.is_empty() {
            "your event".into()
        } else {
            event.name.clone()
        },
        venue: event.venue.clone(),
        starts_at: local_time(event.starts_at.as_ref(), &event.time_zone),
        ticket_count: if tickets.is_empty() {
            order.lines.iter().map(|l| l.quantity as usize).sum()
        } else {
            tickets.len()
        },
        tickets,
        total: money(&order.currency, order.total_minor),
        reason: order.cancel_reason.clone(),
        refunded: money(&order.currency, order.refunded_minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields {
        Fields {
            holder: "Joana <Gonçalves> & co".into(),
            order_id: "o-1".into(),
            event_name: "Noite de Fado".into(),
            venue: "Coliseu".into(),
            starts_at: "Saturday 12 December 2026, 20:00 WET (UTC+00:00)".into(),
            tickets: vec![
                TicketLine {
                    tier: "Plateia".into(),
                    seat: "section A, row 3, seat 12".into(),
                },
                TicketLine {
                    tier: "Geral".into(),
                    seat: String::new(),
                },
            ],
            ticket_count: 2,
            total: "EUR 50.00".into(),
            ..Fields::default()
        }
    }

    #[test]
    fn the_language_is_picked_by_tag_then_primary_then_default() {
        let t = Templates::load(None, "en").unwrap();
        assert_eq!(t.language_for("pt-BR"), "pt");
        assert_eq!(t.language_for("pt"), "pt");
        assert_eq!(t.language_for("de"), "en");
        assert_eq!(t.language_for(""), "en");
        let pt = t.compose("tickets", "pt-BR", &sample()).unwrap();
        assert_eq!(pt.subject, "Os seus bilhetes para Noite de Fado");
        assert!(pt.text.contains("entrada geral"), "{}", pt.text);
        let en = t.compose("tickets", "fr", &sample()).unwrap();
        assert_eq!(en.subject, "Your tickets for Noite de Fado");
        assert!(
            en.text.contains("Joana <Gonçalves> & co"),
            "text is not escaped"
        );
        assert!(
            en.html.contains("Joana &lt;Gonçalves&gt; &amp; co"),
            "html is escaped: {}",
            en.html
        );
        assert!(en.text.contains("section A, row 3, seat 12"));
    }

    #[test]
    fn an_operator_directory_overrides_and_adds_and_a_bad_template_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/tickets.subject"),
            "Tickets: {{ event_name }}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("de")).unwrap();
        std::fs::write(
            dir.path().join("de/tickets.subject"),
            "Ihre Karten für {{ event_name }}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), "en").unwrap();
        assert_eq!(
            t.compose("tickets", "en", &sample()).unwrap().subject,
            "Tickets: Noite de Fado"
        );
        let de = t.compose("tickets", "de-AT", &sample()).unwrap();
        assert_eq!(de.subject, "Ihre Karten für Noite de Fado");
        // German has no body of its own: the default's.
        assert!(de.text.contains("Your order o-1 is paid"));

        std::fs::write(dir.path().join("de/refunded.txt"), "{{ no_such_field }}").unwrap();
        let err = Templates::load(Some(dir.path()), "en").err().unwrap();
        assert!(err.contains("de/refunded.txt"), "{err}");
        assert!(Templates::load(None, "fr").is_err(), "no French set");
    }

    #[test]
    fn a_message_has_both_bodies_and_the_pdf() {
        let t = Templates::load(None, "en").unwrap();
        let composed = t.compose("tickets", "en", &sample()).unwrap();
        let from: Mailbox = "boxoffice <tickets@example.com>".parse().unwrap();
        let m = message(
            &from,
            "ana@example.com",
            "<tickets.o-1@example.com>",
            &composed,
            Some(("tickets.pdf".to_string(), b"%PDF-1.7".to_vec())),
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        for part in [
            "text/plain",
            "text/html",
            "application/pdf",
            "tickets.pdf",
            "Message-ID: <tickets.o-1@example.com>",
        ] {
            assert!(raw.contains(part), "{part} missing in {raw}");
        }
        assert!(message(&from, "not an address", "<x@y>", &composed, None).is_err());
    }

    #[test]
    fn amounts_and_local_times() {
        assert_eq!(money("EUR", 1250), "EUR 12.50");
        assert_eq!(money("JPY", 1200), "JPY 1,200");
        let t = proto::Timestamp {
            seconds: 1_797_105_600, // 2026-12-12T20:00:00Z
            nanos: 0,
        };
        assert_eq!(
            local_time(Some(&t), "Europe/Lisbon"),
            "Saturday 12 December 2026, 20:00 WET (UTC+00:00)"
        );
        assert_eq!(
            local_time(Some(&t), "America/Sao_Paulo"),
            "Saturday 12 December 2026, 17:00 UTC-03:00"
        );
        assert_eq!(local_time(None, "UTC"), "");
    }
}
