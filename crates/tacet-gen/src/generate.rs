//! Plans journeys, renders their events and writes them in arrival order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tacet_core::catalog::JourneySpec;
use tacet_core::{Catalog, EventTime, Role};

use crate::scenario::{Scenario, service_for};
use crate::truth::{IN_FLIGHT, TruthRow};

/// Field layout of the generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"ts":"…","trace_id":"…","service":"…","event":"…","status":"ok",…}`.
    Reference,
    /// Nested objects, a W3C traceparent, epoch-ms times and HTTP status
    /// codes (see `config/alt-shape.toml`).
    Alt,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub journeys: u64,
    pub seed: u64,
    pub shape: Shape,
    /// Event time of the first journey (epoch ms).
    pub start_ms: EventTime,
    /// Journeys started per second of event time.
    pub per_second: f64,
    /// Largest delivery delay (arrival disorder), ms.
    pub max_delay_ms: i64,
    /// Largest clock skew of a service, ms (either way).
    pub max_skew_ms: i64,
    /// Share of events delivered twice.
    pub duplicate_rate: f64,
    /// Share of lines that are malformed.
    pub malformed_rate: f64,
    /// Extra events with names no journey uses, per journey.
    pub unmatched_rate: f64,
    /// No silent failures or stalls outside `bursts` (failed and orphan
    /// journeys, which no SLI counts, still happen): a healthy bank.
    pub healthy: bool,
    /// Windows in which a journey fails silently at a given rate.
    pub bursts: Vec<Burst>,
}

/// A silent-failure burst: journeys of `journey` started in
/// `[from_ms, until_ms)` (offsets from the first journey) fail silently with
/// probability `silent_rate`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub journey: String,
    pub from_ms: i64,
    pub until_ms: i64,
    pub silent_rate: f64,
    pub limit: Option<u64>,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            journeys: 10_000,
            seed: 1,
            shape: Shape::Reference,
            start_ms: 1_795_334_400_000, // 2026-11-22T08:00:00Z
            per_second: 200.0,
            max_delay_ms: 3_000,
            max_skew_ms: 2_000,
            duplicate_rate: 0.01,
            malformed_rate: 0.001,
            unmatched_rate: 0.03,
            healthy: false,
            bursts: Vec::new(),
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenReport {
    pub journeys: u64,
    /// Lines written (events, duplicates, noise and malformed lines).
    pub lines: u64,
    pub bytes: u64,
    pub duplicates: u64,
    pub unmatched: u64,
    pub malformed: BTreeMap<String, u64>,
    /// Truth rows by outcome (`in_flight` included).
    pub truth: BTreeMap<String, u64>,
    pub first_event_ms: EventTime,
    pub last_event_ms: EventTime,
    /// Silent failures by the minute they are decided (epoch minute).
    #[serde(skip)]
    pub silent_per_minute: BTreeMap<i64, u64>,
    /// Journeys started and their money, by minute.
    #[serde(skip)]
    pub started_per_minute: BTreeMap<i64, (u64, f64)>,
}

/// The planned fate of a journey.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Completed,
    Silent { late: bool },
    Failed,
    Stalled,
    Orphan,
}

#[derive(Debug, Clone)]
struct Attrs {
    amount: f64,
    currency: &'static str,
    customer: u32,
    channel: &'static str,
    region: &'static str,
}

/// One event to deliver.
#[derive(Debug, Clone)]
struct Pending {
    arrival: EventTime,
    seq: u64,
    trace: u128,
    name: String,
    service: String,
    ts: EventTime,
    ok: bool,
    event_id: Option<u64>,
    attrs: Option<Attrs>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.seq) == (other.arrival, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.arrival, self.seq).cmp(&(other.arrival, other.seq))
    }
}

/// What the truth needs to know of a journey once the stream's end is known.
struct Expect {
    trace: u128,
    journey: u16,
    outcome: &'static str,
    /// Decided only when the final watermark is past this (`None`: decided on arrival).
    decides_at: Option<EventTime>,
    late_completion: bool,
}

const REGIONS: [(&str, &[&str]); 3] = [
    ("eu-west", &["EUR", "EUR", "GBP"]),
    ("us-east", &["USD"]),
    ("ap-south", &["INR", "SGD"]),
];
const CHANNELS: [&str; 4] = ["mobile", "mobile", "web", "branch"];
const NOISE: [&str; 3] = ["session.heartbeat", "fraud.scored", "audit.logged"];

struct Generator<'a> {
    catalog: &'a Catalog,
    opts: &'a GenOptions,
    rng: StdRng,
    scenarios: Vec<Scenario>,
    cumulative: Vec<f64>,
    skews: HashMap<String, i64>,
    seq: u64,
    next_event_id: u64,
    /// Silent failures injected so far per burst.
    burst_counts: Vec<u64>,
}

impl Generator<'_> {
    fn skew(&mut self, service: &str) -> i64 {
        if let Some(s) = self.skews.get(service) {
            return *s;
        }
        let max = self.opts.max_skew_ms;
        let s = if max > 0 { self.rng.random_range(-max..=max) } else { 0 };
        self.skews.insert(service.to_owned(), s);
        s
    }

    fn pick_journey(&mut self) -> usize {
        let total = *self.cumulative.last().expect("journeys exist");
        let x = self.rng.random::<f64>() * total;
        self.cumulative
            .iter()
            .position(|&c| x < c)
            .unwrap_or(self.cumulative.len() - 1)
    }

    fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn attrs(&mut self, s: &Scenario) -> Attrs {
        let (region, currencies) = REGIONS[self.rng.random_range(0..REGIONS.len())];
        let amount = (s.amount_median * (s.amount_sigma * self.normal()).exp() * 100.0).round() / 100.0;
        Attrs {
            amount: amount.max(1.0),
            currency: currencies[self.rng.random_range(0..currencies.len())],
            customer: self.rng.random_range(10_000..99_999),
            channel: CHANNELS[self.rng.random_range(0..CHANNELS.len())],
            region,
        }
    }

    /// An event at true time `at`: skewed timestamp, delayed arrival.
    fn event(
        &mut self,
        trace: u128,
        name: &str,
        at: EventTime,
        ok: bool,
        channel: &str,
        attrs: Option<&Attrs>,
    ) -> Pending {
        let service = service_for(name, channel);
        let ts = at + self.skew(&service);
        let delay = if self.opts.max_delay_ms > 0 {
            self.rng.random_range(0..=self.opts.max_delay_ms)
        } else {
            0
        };
        // Roughly a third of services emit no event id (dedup by fields then).
        let with_id = !service.len().is_multiple_of(3);
        self.seq += 1;
        self.next_event_id += 1;
        Pending {
            arrival: at + delay,
            seq: self.seq,
            trace,
            name: name.to_owned(),
            service,
            ts,
            ok,
            event_id: with_id.then_some(self.next_event_id),
            attrs: attrs.cloned(),
        }
    }

    fn uniform(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo { lo } else { self.rng.random_range(lo..=hi) }
    }

    /// Plans one journey; returns its events and what the truth expects.
    fn plan(&mut self, start: EventTime) -> (Vec<Pending>, Expect) {
        let j = self.pick_journey();
        let spec: &JourneySpec = &self.catalog.journeys()[j];
        let s = self.scenarios[j].clone();
        let trace: u128 = self.rng.random();
        let attrs = self.attrs(&s);
        let channel = attrs.channel;
        let mut s = s;
        if self.opts.healthy {
            s.silent_rate = 0.0;
            s.stalled_rate = 0.0;
            s.silent_above_amount = None;
        }
        let roll: f64 = self.rng.random();
        let burst_roll: f64 = self.rng.random();
        let offset = start - self.opts.start_ms;
        let in_burst = self.opts.bursts.iter().enumerate().position(|(i, b)| {
            b.journey == spec.name
                && (b.from_ms..b.until_ms).contains(&offset)
                && b.limit.is_none_or(|l| self.burst_counts[i] < l)
                && burst_roll < b.silent_rate
        });
        let silent_by_amount = s.silent_above_amount.is_some_and(|limit| attrs.amount > limit);
        let fate = if let Some(i) = in_burst {
            self.burst_counts[i] += 1;
            Fate::Silent { late: false }
        } else if roll < s.orphan_rate {
            Fate::Orphan
        } else if roll < s.orphan_rate + s.stalled_rate {
            Fate::Stalled
        } else if roll < s.orphan_rate + s.stalled_rate + s.failed_rate {
            Fate::Failed
        } else if silent_by_amount || roll < s.orphan_rate + s.stalled_rate + s.failed_rate + s.silent_rate {
            Fate::Silent {
                late: self.rng.random::<f64>() < s.late_share,
            }
        } else {
            Fate::Completed
        };
        let names = |role: fn(Role) -> bool| -> Vec<String> {
            (0..self.catalog.name_count())
                .map(|n| n as u16)
                .filter(|&n| role(spec.role(n)))
                .map(|n| self.catalog.name(n).to_owned())
                .collect()
        };
        let starts = names(|r| r == Role::Start);
        let acks_ok = names(|r| r == Role::AckOk);
        let acks_err = names(|r| r == Role::AckError);
        let groups: Vec<Vec<String>> = spec
            .groups
            .iter()
            .map(|g| g.split('|').map(|a| a.trim().to_owned()).collect())
            .collect();
        let (deadline, ato) = (spec.deadline_ms, spec.ack_timeout_ms);
        let journey = spec.id;
        let mut events = Vec::new();
        let mut expect = Expect {
            trace,
            journey,
            outcome: "completed",
            decides_at: None,
            late_completion: false,
        };

        if fate == Fate::Orphan {
            // Required steps only: no start, no ack.
            let mut first = EventTime::MAX;
            let mut earliest_name = String::new();
            for (gi, g) in groups.iter().enumerate().take(2) {
                let at = start + gi as i64 * 700 + self.uniform(0, 500);
                let e = self.event(trace, &g[0], at, true, channel, None);
                if e.ts < first {
                    first = e.ts;
                    earliest_name = e.name.clone();
                }
                events.push(e);
            }
            let id = self.catalog.lookup(&earliest_name).expect("a configured step");
            expect.journey = self.catalog.orphan_journey(id).unwrap_or(journey);
            expect.outcome = "orphan";
            expect.decides_at = Some(first + self.catalog.orphan_timeout_ms);
            return (events, expect);
        }

        let start_event =
            (!starts.is_empty()).then(|| self.event(trace, &starts[0], start, true, channel, Some(&attrs)));
        let start_ts = start_event.as_ref().map(|e| e.ts);
        events.extend(start_event);
        if fate == Fate::Stalled {
            expect.outcome = "stalled";
            expect.decides_at = start_ts.map(|t| t + ato);
            return (events, expect);
        }
        let ack_at = start + self.uniform(100, ato * 3 / 10);
        if fate == Fate::Failed {
            let e = if !acks_err.is_empty() && self.rng.random::<f64>() < 0.7 {
                self.event(trace, &acks_err[0], ack_at, true, channel, None)
            } else {
                self.event(trace, &acks_ok[0], ack_at, false, channel, None)
            };
            events.push(e);
            expect.outcome = "failed";
            return (events, expect);
        }
        let ack = self.event(trace, &acks_ok[0], ack_at, true, channel, Some(&attrs));
        let ack_ts = ack.ts;
        events.push(ack);
        let silent_group = match fate {
            Fate::Silent { .. } => Some(s.silent_group.min(groups.len() - 1)),
            _ => None,
        };
        let retry_group = (fate == Fate::Completed && self.rng.random::<f64>() < s.retry_rate)
            .then(|| self.rng.random_range(0..groups.len()));
        let serial = groups.len() >= 4;
        for (gi, g) in groups.iter().enumerate() {
            let alt = g[self.rng.random_range(0..g.len())].clone();
            // Steps land well inside the deadline (skew and delay cannot push them out).
            let at = if serial {
                ack_at + (gi as i64 + 1) * deadline / 10 + self.uniform(0, deadline / 20)
            } else {
                ack_at + self.uniform(200, deadline / 2)
            };
            if Some(gi) == silent_group {
                if self.rng.random::<f64>() < s.silent_as_error {
                    let e = self.event(trace, &alt, at, false, channel, None);
                    events.push(e);
                }
                if matches!(fate, Fate::Silent { late: true }) {
                    let late_at = ack_at + deadline + self.uniform(5 * 60_000, 60 * 60_000);
                    let e = self.event(trace, &alt, late_at, true, channel, None);
                    events.push(e);
                }
                continue;
            }
            if Some(gi) == retry_group {
                let e = self.event(trace, &alt, at - 2_000, false, channel, None);
                events.push(e);
            }
            let e = self.event(trace, &alt, at, true, channel, None);
            events.push(e);
        }
        if let Fate::Silent { late } = fate {
            expect.outcome = "silent_failure";
            expect.decides_at = Some(ack_ts + deadline);
            expect.late_completion = late;
        }
        (events, expect)
    }
}

/// Writes `opts.journeys` journeys to `events` in arrival order and their
/// truth to `truth` (NDJSON, one [`TruthRow`] per line).
pub fn generate(
    catalog: &Catalog,
    opts: &GenOptions,
    events: &mut dyn Write,
    truth: &mut dyn Write,
) -> io::Result<GenReport> {
    generate_with_progress(catalog, opts, events, truth, &|_| {})
}

/// [`generate`], calling `progress` with the number of journeys planned so far
/// every 10,000 journeys.
pub fn generate_with_progress(
    catalog: &Catalog,
    opts: &GenOptions,
    events: &mut dyn Write,
    truth: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> io::Result<GenReport> {
    let scenarios: Vec<Scenario> = catalog.journeys().iter().map(Scenario::for_journey).collect();
    let mut acc = 0.0;
    let cumulative = scenarios
        .iter()
        .map(|s| {
            acc += s.weight;
            acc
        })
        .collect();
    let mut g = Generator {
        catalog,
        opts,
        rng: StdRng::seed_from_u64(opts.seed),
        scenarios,
        cumulative,
        skews: HashMap::new(),
        seq: 0,
        next_event_id: opts.seed.wrapping_mul(1_000_000_007),
        burst_counts: vec![0; opts.bursts.len()],
    };
    let mut report = GenReport {
        journeys: opts.journeys,
        first_event_ms: EventTime::MAX,
        last_event_ms: EventTime::MIN,
        ..Default::default()
    };
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut expects = Vec::with_capacity(opts.journeys as usize);
    let mut line = Vec::with_capacity(512);
    let interval = 1000.0 / opts.per_second.max(1e-3);
    let mut out = Emitter {
        out: events,
        report: &mut report,
        rng: StdRng::seed_from_u64(opts.seed ^ 0x5eed),
        opts,
        line: &mut line,
    };
    for i in 0..opts.journeys {
        if i % 10_000 == 0 {
            progress(i);
        }
        let start = opts.start_ms + (i as f64 * interval) as i64;
        while heap.peek().is_some_and(|Reverse(p)| p.arrival < start) {
            let Reverse(p) = heap.pop().expect("peeked");
            out.deliver(p, &mut heap, &mut g)?;
        }
        let (evs, expect) = g.plan(start);
        let started = out
            .report
            .started_per_minute
            .entry(start.div_euclid(60_000))
            .or_default();
        started.0 += 1;
        started.1 += evs
            .iter()
            .find_map(|e| e.attrs.as_ref().map(|a| a.amount))
            .unwrap_or(0.0);
        if expect.outcome == "silent_failure"
            && let Some(at) = expect.decides_at
        {
            *out.report.silent_per_minute.entry(at.div_euclid(60_000)).or_default() += 1;
        }
        for e in evs {
            heap.push(Reverse(e));
        }
        if g.rng.random::<f64>() < opts.unmatched_rate {
            let noise = NOISE[g.rng.random_range(0..NOISE.len())];
            let at = start + g.uniform(0, 2_000);
            let e = g.event(expect.trace, noise, at, true, "web", None);
            heap.push(Reverse(e));
            out.report.unmatched += 1;
        }
        expects.push(expect);
    }
    while let Some(Reverse(p)) = heap.pop() {
        out.deliver(p, &mut heap, &mut g)?;
    }

    // The final watermark is the largest event time: decisions not before it
    // are in flight (SPEC §4).
    let end = report.last_event_ms;
    let mut hex = String::with_capacity(32);
    for e in &expects {
        hex.clear();
        use std::fmt::Write as _;
        let _ = write!(hex, "{:032x}", e.trace);
        let decided = e.decides_at.is_none_or(|t| t < end);
        let journey = catalog.journey(e.journey).name.clone();
        let mut rows = vec![if decided { e.outcome } else { IN_FLIGHT }];
        if decided && e.late_completion {
            rows.push("late_completion");
        }
        for outcome in rows {
            *report.truth.entry(outcome.to_owned()).or_default() += 1;
            let row = TruthRow {
                trace_id: hex.clone(),
                journey: journey.clone(),
                outcome: outcome.to_owned(),
            };
            serde_json::to_writer(&mut *truth, &row)?;
            truth.write_all(b"\n")?;
        }
    }
    Ok(report)
}

struct Emitter<'a> {
    out: &'a mut dyn Write,
    report: &'a mut GenReport,
    rng: StdRng,
    opts: &'a GenOptions,
    line: &'a mut Vec<u8>,
}

impl Emitter<'_> {
    fn deliver(
        &mut self,
        p: Pending,
        heap: &mut BinaryHeap<Reverse<Pending>>,
        g: &mut Generator<'_>,
    ) -> io::Result<()> {
        if p.seq != u64::MAX && self.rng.random::<f64>() < self.opts.duplicate_rate {
            // Delivered again a little later: same content, same id.
            let mut dup = p.clone();
            dup.arrival += self.rng.random_range(0..=2_000);
            dup.seq = u64::MAX; // never duplicated twice
            heap.push(Reverse(dup));
            self.report.duplicates += 1;
        }
        self.report.first_event_ms = self.report.first_event_ms.min(p.ts);
        if g.catalog.lookup(&p.name).is_some() {
            self.report.last_event_ms = self.report.last_event_ms.max(p.ts);
        }
        self.line.clear();
        render(self.line, &p, self.opts.shape);
        if self.rng.random::<f64>() < self.opts.malformed_rate {
            let reason = self.malform();
            *self.report.malformed.entry(reason.to_owned()).or_default() += 1;
            self.report.lines += 1;
            self.report.bytes += self.line.len() as u64 + 1;
            self.out.write_all(self.line)?;
            self.out.write_all(b"\n")?;
            self.line.clear();
            render(self.line, &p, self.opts.shape);
        }
        self.report.lines += 1;
        self.report.bytes += self.line.len() as u64 + 1;
        self.out.write_all(self.line)?;
        self.out.write_all(b"\n")
    }

    /// Turns the rendered line into one a careless producer would write;
    /// returns the dead-letter reason it must get.
    fn malform(&mut self) -> &'static str {
        match self.rng.random_range(0..5) {
            0 => {
                self.line.clear();
                self.line
                    .extend_from_slice(b"<html><body>502 Bad Gateway</body></html>");
                "not_json"
            }
            1 => {
                let half = self.line.len() / 2;
                self.line.truncate(half);
                "not_json"
            }
            2 => {
                self.line.clear();
                self.line.extend_from_slice(
                    br#"{"ts":"2026-11-22T09:00:00Z","event":"transfer.accepted","service":"payments-api"}"#,
                );
                "missing_trace_id"
            }
            3 => {
                self.line.clear();
                self.line.extend_from_slice(
                    br#"{"ts":"22/11/2026 09:00","trace_id":"0af7651916cd43dd8448eb211c80319c","event":"ledger.posted"}"#,
                );
                "bad_time"
            }
            _ => {
                self.line.clear();
                self.line
                    .extend_from_slice(b"{\"trace_id\":\"\xff\xfe\",\"ts\":1,\"event\":\"x\"}");
                "invalid_utf8"
            }
        }
    }
}

fn rfc3339(ms: EventTime) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Writes one event line (no newline). Generated strings never need escaping.
fn render(out: &mut Vec<u8>, p: &Pending, shape: Shape) {
    let mut s = String::with_capacity(320);
    use std::fmt::Write as _;
    match shape {
        Shape::Reference => {
            let _ = write!(
                s,
                r#"{{"ts":"{}","trace_id":"{:032x}","service":"{}","event":"{}","status":"{}""#,
                rfc3339(p.ts),
                p.trace,
                p.service,
                p.name,
                if p.ok { "ok" } else { "error" }
            );
            if let Some(id) = p.event_id {
                let _ = write!(s, r#","event_id":"ev-{id:x}""#);
            }
            if let Some(a) = &p.attrs {
                let _ = write!(
                    s,
                    r#","amount":{:.2},"currency":"{}","customer_id":"c-{}","channel":"{}","region":"{}""#,
                    a.amount, a.currency, a.customer, a.channel, a.region
                );
            }
            let _ = write!(s, r#","level":"info","host":"pod-{}"}}"#, p.seq % 7);
        }
        Shape::Alt => {
            let _ = write!(
                s,
                r#"{{"level":"info","meta":{{"type":"{}","epoch_ms":{},"emitter":{{"name":"{}","pod":"p-{}"}}"#,
                p.name,
                p.ts,
                p.service,
                p.seq % 7
            );
            if let Some(id) = p.event_id {
                let _ = write!(s, r#","ids":["ev-{id:x}"]"#);
            }
            let _ = write!(
                s,
                r#"}},"ctx":{{"traceparent":"00-{:032x}-{:016x}-01"}},"http":{{"code":{}}}"#,
                p.trace,
                p.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                if p.ok { 200 } else { 502 }
            );
            if let Some(a) = &p.attrs {
                let _ = write!(
                    s,
                    r#","payload":{{"value":{{"amount":{:.2},"ccy":"{}"}},"customer":{{"id":"c-{}","segment":"retail"}},"channel":"{}","geo":{{"region":"{}"}}}}"#,
                    a.amount, a.currency, a.customer, a.channel, a.region
                );
            }
            s.push('}');
        }
    }
    out.extend_from_slice(s.as_bytes());
}

/// Business metrics a bank would keep beside tacet's outcomes, derived from
/// the generated traffic: `payment_volume.csv` (minute, payments, amount) and
/// `contact_centre_calls.csv` (minute, calls). Calls follow silent failures:
/// a base load plus three calls per silent failure decided in that minute,
/// with noise — the correlation `tacet sql` should find.
pub fn write_business_metrics(
    report: &GenReport,
    seed: u64,
    payments: &mut dyn Write,
    calls: &mut dyn Write,
) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xca11);
    writeln!(payments, "minute,payments,amount")?;
    for (minute, (n, amount)) in &report.started_per_minute {
        writeln!(payments, "{},{n},{amount:.2}", rfc3339(minute * 60_000))?;
    }
    writeln!(calls, "minute,calls")?;
    for minute in report.started_per_minute.keys() {
        let silent = report.silent_per_minute.get(minute).copied().unwrap_or(0);
        let n = 12 + rng.random_range(0..8u64) + 3 * silent;
        writeln!(calls, "{},{n}", rfc3339(minute * 60_000))?;
    }
    Ok(())
}
