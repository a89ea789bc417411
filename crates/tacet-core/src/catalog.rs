//! The compiled form of the `[[journey]]` tables: dense ids for step names and
//! journeys, and a role table the correlator indexes per event.
//!
//! This is also where ambiguity is rejected. A name that opens a journey (a
//! start or an ack) must mean exactly one thing, because the correlator uses it
//! to decide which journey a trace is; required steps may be shared between
//! journeys (`ledger.posted` ends both a transfer and a bill payment).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{AttributeType, Config, ConfigError};
use crate::event::EventTime;
use crate::pointer::JsonPointer;

/// Dense id of an event name the catalog knows.
pub type NameId = u16;
/// Dense id of a journey, in config order.
pub type JourneyId = u16;
/// Dense id of a distinct attribute pointer.
pub type AttrSlot = u16;

/// What an event name means inside one journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not part of this journey.
    None,
    /// Opens the journey.
    Start,
    /// The customer was told "success".
    AckOk,
    /// The customer was told "failed".
    AckError,
    /// Satisfies the required-step groups in the mask.
    Step(u32),
}

/// One journey, compiled.
#[derive(Debug, Clone)]
pub struct JourneySpec {
    pub id: JourneyId,
    pub name: String,
    pub description: Option<String>,
    pub deadline_ms: i64,
    pub ack_timeout_ms: i64,
    pub slo: f64,
    /// Labels of the required-step groups, as written (`notify.sms|notify.push`).
    pub groups: Vec<String>,
    /// Mask with one bit per group.
    pub all_groups: u32,
    /// (catalog column, pointer slot) for each of this journey's attributes.
    pub attributes: Vec<(usize, AttrSlot)>,
    /// Column holding the money amount (`amount`), if the journey maps one.
    pub money_column: Option<usize>,
    roles: Vec<Role>,
}

impl JourneySpec {
    /// The role of `name` in this journey.
    #[inline]
    pub fn role(&self, name: NameId) -> Role {
        self.roles[name as usize]
    }
}

/// An attribute column of the outcome table (the union over journeys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeColumn {
    pub name: String,
    pub kind: AttributeType,
}

/// The compiled configuration the hot path consults.
#[derive(Debug, Clone)]
pub struct Catalog {
    names: Vec<String>,
    /// Looked up once per event: hashbrown's foldhash, not std's SipHash
    /// (only lookups come from input; the map is built from the config).
    name_ids: hashbrown::HashMap<String, NameId>,
    journeys: Vec<JourneySpec>,
    /// Per name: the journey it opens and how (start / ack), if any.
    openers: Vec<Option<(JourneyId, Role)>>,
    /// Per name: the first journey (config order) that requires it, for orphans.
    orphan_journey: Vec<Option<JourneyId>>,
    pointers: Vec<JsonPointer>,
    columns: Vec<AttributeColumn>,
    /// Durations of `[engine]`, in milliseconds of event time.
    pub allowed_lateness_ms: i64,
    pub late_horizon_ms: i64,
    pub orphan_timeout_ms: i64,
    /// `engine.max_events_per_journey`.
    pub max_events_per_journey: usize,
}

fn ms(d: std::time::Duration) -> EventTime {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Catalog {
    /// Compiles `config`, rejecting names whose role would be ambiguous.
    pub fn new(config: &Config) -> Result<Catalog, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: config.origin.clone(),
            key,
            message,
        };
        if config.journeys.len() > 64 {
            return Err(invalid("journey".into(), "at most 64 journeys".into()));
        }
        let mut catalog = Catalog {
            names: Vec::new(),
            name_ids: hashbrown::HashMap::new(),
            journeys: Vec::new(),
            openers: Vec::new(),
            orphan_journey: Vec::new(),
            pointers: Vec::new(),
            columns: Vec::new(),
            allowed_lateness_ms: ms(config.engine.allowed_lateness),
            late_horizon_ms: ms(config.engine.late_horizon),
            orphan_timeout_ms: ms(config.orphan_timeout()),
            max_events_per_journey: config.engine.max_events_per_journey,
        };

        // Attribute columns: the union of names, each with one type.
        let mut column_types: std::collections::BTreeMap<&str, AttributeType> = Default::default();
        for j in &config.journeys {
            for (attr, spec) in &j.attributes {
                let (_, kind) = spec.resolve(attr);
                if let Some(prev) = column_types.insert(attr, kind)
                    && prev != kind
                {
                    return Err(invalid(
                        format!("journey.{}.attributes.{attr}", j.name),
                        format!("type {kind:?} differs from {prev:?} in another journey; one column has one type"),
                    ));
                }
            }
        }
        catalog.columns = column_types
            .into_iter()
            .map(|(name, kind)| AttributeColumn {
                name: name.to_owned(),
                kind,
            })
            .collect();

        // Openers first: each may appear once in the whole config.
        let mut opener_of: HashMap<&str, String> = HashMap::new();
        for (jid, j) in config.journeys.iter().enumerate() {
            let lists = [("start", &j.start), ("ack_ok", &j.ack_ok), ("ack_error", &j.ack_error)];
            for (field, list) in lists {
                for name in list.iter() {
                    let here = format!("journey.{}.{field}", j.name);
                    if name.is_empty() || name.contains('|') {
                        return Err(invalid(here, format!("{name:?} is not an event name")));
                    }
                    if let Some(prev) = opener_of.insert(name, here.clone()) {
                        return Err(invalid(
                            here,
                            format!("{name:?} is already `{prev}`: a start or ack must belong to one journey"),
                        ));
                    }
                    let id = catalog.intern(name);
                    let role = match field {
                        "start" => Role::Start,
                        "ack_ok" => Role::AckOk,
                        _ => Role::AckError,
                    };
                    catalog.openers[id as usize] = Some((jid as JourneyId, role));
                }
            }
        }

        // Required steps: may be shared between journeys, never an opener.
        let mut groups_of = Vec::new();
        for j in &config.journeys {
            let mut groups = Vec::new();
            for (gi, group) in j.complete.iter().enumerate() {
                let here = format!("journey.{}.complete", j.name);
                let mut alternatives = Vec::new();
                for alt in group.split('|').map(str::trim) {
                    if alt.is_empty() {
                        return Err(invalid(here, format!("{group:?} has an empty alternative")));
                    }
                    if let Some(prev) = opener_of.get(alt) {
                        return Err(invalid(
                            here,
                            format!("{alt:?} is also `{prev}`: a step cannot also open a journey"),
                        ));
                    }
                    if alternatives.contains(&alt) {
                        return Err(invalid(here, format!("{alt:?} is listed twice in {group:?}")));
                    }
                    alternatives.push(alt);
                }
                let ids: Vec<NameId> = alternatives.iter().map(|a| catalog.intern(a)).collect();
                groups.push((gi, group.clone(), ids));
            }
            groups_of.push(groups);
        }
        if catalog.names.len() > NameId::MAX as usize {
            return Err(invalid("journey".into(), "too many distinct event names".into()));
        }

        let mut pointer_slots: HashMap<JsonPointer, AttrSlot> = HashMap::new();
        for (jid, (j, groups)) in config.journeys.iter().zip(groups_of).enumerate() {
            let mut roles = vec![Role::None; catalog.names.len()];
            for (id, opener) in catalog.openers.iter().enumerate() {
                if let Some((owner, role)) = opener
                    && *owner as usize == jid
                {
                    roles[id] = *role;
                }
            }
            let mut labels = Vec::new();
            for (gi, label, ids) in &groups {
                labels.push(label.clone());
                for &id in ids {
                    let mask = match roles[id as usize] {
                        Role::Step(m) => m,
                        _ => 0,
                    };
                    roles[id as usize] = Role::Step(mask | (1 << gi));
                    if catalog.orphan_journey[id as usize].is_none() {
                        catalog.orphan_journey[id as usize] = Some(jid as JourneyId);
                    }
                }
            }
            let mut attributes = Vec::new();
            let mut money_column = None;
            for (attr, spec) in &j.attributes {
                let (text, kind) = spec.resolve(attr);
                let pointer = JsonPointer::parse(text).map_err(|cause| ConfigError::Pointer {
                    path: config.origin.clone(),
                    key: format!("journey.{}.attributes.{attr}", j.name),
                    cause,
                })?;
                let next = pointer_slots.len() as AttrSlot;
                let slot = *pointer_slots.entry(pointer.clone()).or_insert_with(|| {
                    catalog.pointers.push(pointer);
                    next
                });
                let column = catalog
                    .columns
                    .iter()
                    .position(|c| c.name == *attr)
                    .expect("column exists");
                if attr == "amount" && kind == AttributeType::Float {
                    money_column = Some(column);
                }
                attributes.push((column, slot));
            }
            if catalog.pointers.len() > 127 {
                return Err(invalid(
                    format!("journey.{}.attributes", j.name),
                    "at most 127 distinct attribute pointers over all journeys".into(),
                ));
            }
            let n = labels.len();
            catalog.journeys.push(JourneySpec {
                id: jid as JourneyId,
                name: j.name.clone(),
                description: j.description.clone(),
                deadline_ms: ms(j.deadline),
                ack_timeout_ms: ms(j.ack_timeout),
                slo: j.slo,
                groups: labels,
                all_groups: if n == 32 { u32::MAX } else { (1u32 << n) - 1 },
                attributes,
                money_column,
                roles,
            });
        }
        Ok(catalog)
    }

    fn intern(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as NameId;
        self.names.push(name.to_owned());
        self.name_ids.insert(name.to_owned(), id);
        self.openers.push(None);
        self.orphan_journey.push(None);
        id
    }

    /// The id of an event name, or `None` for names no journey uses (unmatched).
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<NameId> {
        self.name_ids.get(name).copied()
    }

    /// The text of a name id.
    #[inline]
    pub fn name(&self, id: NameId) -> &str {
        &self.names[id as usize]
    }

    /// Number of known names.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The journey `name` opens, and whether as start, ack_ok or ack_error.
    #[inline]
    pub fn opener(&self, name: NameId) -> Option<(JourneyId, Role)> {
        self.openers[name as usize]
    }

    /// The journey an orphan holding step `name` is reported under: the first
    /// journey, in config order, that requires it.
    #[inline]
    pub fn orphan_journey(&self, name: NameId) -> Option<JourneyId> {
        self.orphan_journey[name as usize]
    }

    /// All journeys, in config order.
    pub fn journeys(&self) -> &[JourneySpec] {
        &self.journeys
    }

    /// One journey.
    #[inline]
    pub fn journey(&self, id: JourneyId) -> &JourneySpec {
        &self.journeys[id as usize]
    }

    /// The journey called `name`.
    pub fn journey_by_name(&self, name: &str) -> Option<&JourneySpec> {
        self.journeys.iter().find(|j| j.name == name)
    }

    /// The distinct attribute pointers; decoders extract each into its slot.
    pub fn attribute_pointers(&self) -> &[JsonPointer] {
        &self.pointers
    }

    /// Attribute columns of the outcome table, sorted by name.
    pub fn columns(&self) -> &[AttributeColumn] {
        &self.columns
    }

    /// Where the config came from.
    pub fn origin(config: &Config) -> PathBuf {
        config.origin.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn catalog(journeys: &str) -> Result<Catalog, ConfigError> {
        Catalog::new(&Config::from_toml(journeys, Path::new("c.toml"))?)
    }

    const TWO: &str = r#"
[[journey]]
name = "transfer"
start = "t.req"
ack_ok = ["t.ok"]
ack_error = ["t.no"]
complete = ["ledger", "sms|push"]
deadline = "2m"
ack_timeout = "30s"
slo = 0.999
attributes = { amount = "/amount", customer = "/customer_id" }

[[journey]]
name = "bill"
start = "b.req"
ack_ok = "b.ok"
complete = ["ledger", "biller"]
deadline = "5m"
ack_timeout = "30s"
slo = 0.99
attributes = { amount = "/amt" }
"#;

    #[test]
    fn roles_and_groups() {
        let c = catalog(TWO).unwrap();
        let t = c.journey_by_name("transfer").unwrap();
        let id = |n| c.lookup(n).unwrap();
        assert_eq!(t.role(id("t.req")), Role::Start);
        assert_eq!(t.role(id("t.ok")), Role::AckOk);
        assert_eq!(t.role(id("t.no")), Role::AckError);
        assert_eq!(t.role(id("ledger")), Role::Step(0b01));
        assert_eq!(t.role(id("push")), Role::Step(0b10));
        assert_eq!(t.role(id("biller")), Role::None);
        assert_eq!(t.all_groups, 0b11);
        assert_eq!(t.groups, ["ledger", "sms|push"]);
        assert_eq!(c.opener(id("b.ok")), Some((1, Role::AckOk)));
        assert_eq!(c.opener(id("ledger")), None);
        assert_eq!(c.orphan_journey(id("ledger")), Some(0), "first journey in config order");
        assert_eq!(c.orphan_journey(id("biller")), Some(1));
        assert_eq!(c.lookup("heartbeat"), None);
    }

    #[test]
    fn attributes_share_columns_and_split_pointers() {
        let c = catalog(TWO).unwrap();
        let names: Vec<_> = c.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["amount", "customer"]);
        assert_eq!(c.columns()[0].kind, AttributeType::Float);
        assert_eq!(c.attribute_pointers().len(), 3, "/amount, /customer_id, /amt");
        assert_eq!(c.journey(0).money_column, Some(0));
    }

    #[test]
    fn ambiguous_names_are_rejected() {
        let shared_ack = TWO.replace("ack_ok = \"b.ok\"", "ack_ok = \"t.ok\"");
        let err = catalog(&shared_ack).unwrap_err().to_string();
        assert!(err.contains("journey.bill.ack_ok") && err.contains("t.ok"), "{err}");

        let step_is_start = TWO.replace("complete = [\"ledger\", \"biller\"]", "complete = [\"t.req\"]");
        let err = catalog(&step_is_start).unwrap_err().to_string();
        assert!(err.contains("journey.bill.complete"), "{err}");

        let start_is_ack = TWO.replace("ack_ok = [\"t.ok\"]", "ack_ok = [\"t.req\"]");
        assert!(catalog(&start_is_ack).is_err());

        let empty_alt = TWO.replace("sms|push", "sms|");
        assert!(catalog(&empty_alt).is_err());
    }

    #[test]
    fn conflicting_attribute_types_are_rejected() {
        let text = TWO.replace(
            "attributes = { amount = \"/amt\" }",
            "attributes = { amount = { pointer = \"/amt\", type = \"string\" } }",
        );
        let err = catalog(&text).unwrap_err().to_string();
        assert!(err.contains("journey.bill.attributes.amount"), "{err}");
    }

    #[test]
    fn default_config_compiles() {
        let c = Catalog::new(&Config::embedded_default()).unwrap();
        assert_eq!(c.journeys().len(), 6);
        assert_eq!(c.journey_by_name("account_opening").unwrap().groups.len(), 5);
    }
}
