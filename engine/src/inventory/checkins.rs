//! Check-ins: tickets let in at the gates, once each. A scan names a ticket by the token its QR
//! code holds; the token must be the very one this event issued for that ticket (which also
//! proves its signature: only the engine's key made it), and the ticket's order must still be
//! paid. The first scan of a ticket admits it and is recorded; a later one is refused with the
//! first admission (`Rejection::AlreadyCheckedIn`) when made online, and recorded as a conflict
//! when it was made offline and uploaded after (`upload_scans`), so that nothing a gate saw is
//! dropped. A scan already recorded for the ticket (same scan id at the same gate) repeats its
//! first outcome and changes nothing: a scanner may retry freely. "First" is first to reach the
//! server: an offline scan uploaded after an online admission is the conflict, whatever its time.
//!
//! An event made with `allow_reentry` also records exits (`check_out`): a ticket that left is let
//! in again by its next scan, and every entry counts as an admission. Without it a ticket is in
//! for good once admitted. A ticket's scans (entries, conflicts, exits) are bounded by
//! `MAX_SCANS_PER_TICKET`.

use super::*;

/// Gates an event counts, at most; a scan at one more is refused.
pub const MAX_GATES_PER_EVENT: usize = 1_000;
/// Scans recorded for one ticket (its entries, conflicts and exits), at most: 32 visits with
/// re-entry.
pub const MAX_SCANS_PER_TICKET: usize = 64;
/// Scans in one upload, at most.
pub const MAX_SCANS_PER_UPLOAD: usize = 1_000;
/// Longest gate id and scan id, bytes.
pub const MAX_SCAN_ID_BYTES: usize = 128;

/// A ticket presented at a gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The ticket the token names, as read from it (not trusted until it matches the issued
    /// token).
    pub ticket_id: TicketId,
    pub token: String,
    pub gate: String,
    pub scan_id: String,
}

/// A ticket let in: where, when and by which scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub ticket_id: TicketId,
    pub gate: String,
    pub scan_id: String,
    pub at_ms: u64,
}

/// What an uploaded scan came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    /// This scan let the ticket in.
    Admitted(Admission),
    /// Another scan let the ticket in first; this one is recorded as a conflict.
    Conflict { first: Admission },
    /// This scan was recorded before (a retried upload): nothing changed. `admitted` says
    /// whether it was the one that let the ticket in.
    Repeated { first: Admission, admitted: bool },
}

/// A ticket that left, with re-entry allowed: where, when and by which scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub ticket_id: TicketId,
    pub gate: String,
    pub scan_id: String,
    pub at_ms: u64,
}

/// What a recorded scan did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ScanKind {
    /// Let the ticket in.
    Entry,
    /// Made while the ticket was already in (an offline scan uploaded later).
    Conflict,
    /// Let the ticket out (re-entry allowed).
    Exit,
}

/// A scan as the log keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ScanRecord {
    pub ticket_id: TicketId,
    pub gate: String,
    pub scan_id: String,
    pub at_ms: u64,
    pub kind: ScanKind,
}

/// A scan kept with its ticket, to answer its retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ScanEntry {
    scan_id: String,
    gate: String,
    at_ms: u64,
    kind: ScanKind,
}

/// A ticket let in at least once: its last admission, whether it is in now, and every scan
/// recorded for it, oldest first (an entry first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TicketScans {
    admission: Admission,
    inside: bool,
    scans: Vec<ScanEntry>,
}

impl TicketScans {
    /// The scan recorded with `scan_id` at `gate`, if any.
    fn find(&self, scan_id: &str, gate: &str) -> Option<&ScanEntry> {
        self.scans
            .iter()
            .find(|e| e.scan_id == scan_id && e.gate == gate)
    }

    /// The latest time among its scans.
    fn last_at_ms(&self) -> u64 {
        self.scans.iter().map(|e| e.at_ms).max().unwrap_or(0)
    }

    /// When it last left; 0 if never.
    fn last_exit_ms(&self) -> u64 {
        self.scans
            .iter()
            .filter(|e| e.kind == ScanKind::Exit)
            .map(|e| e.at_ms)
            .max()
            .unwrap_or(0)
    }
}

/// Counts of one gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCounts {
    pub gate: String,
    /// Entries, re-entries included.
    pub admitted: u64,
    pub conflicts: u64,
    pub exits: u64,
}

/// Check-in figures of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckInStats {
    /// Tickets of paid orders.
    pub tickets_live: u64,
    /// Entries, re-entries included.
    pub admitted: u64,
    pub conflicts: u64,
    pub exits: u64,
    /// Tickets in now.
    pub inside: u64,
    /// Per gate, in the order gates first scanned.
    pub gates: Vec<GateCounts>,
}

/// The scans of one decision so far, over the state: an upload may scan a ticket twice.
#[derive(Default)]
struct Pending {
    admitted: HashMap<TicketId, Admission>,
    /// (ticket, scan id, gate) of every scan recorded so far.
    scans: HashSet<(TicketId, String, String)>,
    /// Gates the event did not know before this decision.
    gates: HashSet<String>,
}

impl Inventory {
    /// Decides an online scan: the ticket's admission and whether this scan made it (`false`: a
    /// retry of the scan that did, which records nothing), or why not.
    pub fn check_in(
        &mut self,
        scan: &Scan,
        now_ms: u64,
    ) -> Result<Decision<(Admission, bool)>, Rejection> {
        let pending = Pending::default();
        match self.judge(scan, now_ms, &pending)? {
            Judged::New(admission) => {
                self.scan_room(scan.ticket_id, &pending)?;
                self.gate_room(&scan.gate, &pending)?;
                let record = Record::ScansRecorded {
                    scans: vec![scan_record(scan, admission.at_ms, ScanKind::Entry)],
                };
                self.apply(&record);
                Ok(Decision {
                    record: Some(record),
                    answer: (admission, true),
                })
            }
            Judged::Repeat {
                first,
                admitted: true,
            } => Ok(Decision {
                record: None,
                answer: (first, false),
            }),
            Judged::Repeat { first, .. } | Judged::AlreadyIn(first) => Err(already(first)),
        }
    }

    /// Decides an exit, when the event allows re-entry: the ticket's exit and whether this scan
    /// made it (`false`: a retry, which records nothing), or why not. The order need not be paid
    /// still: a holder whose order was refunded may always leave.
    pub fn check_out(
        &mut self,
        scan: &Scan,
        now_ms: u64,
    ) -> Result<Decision<(Exit, bool)>, Rejection> {
        self.verify(scan)?;
        if !self.spec.allow_reentry {
            return Err(Rejection::ReentryNotAllowed);
        }
        let Some(recorded) = self.admissions.get(&scan.ticket_id) else {
            return Err(Rejection::NotCheckedIn(scan.ticket_id));
        };
        if let Some(e) = recorded.find(&scan.scan_id, &scan.gate) {
            return match e.kind {
                ScanKind::Exit => Ok(Decision {
                    record: None,
                    answer: (exit(scan, e.at_ms), false),
                }),
                _ => Err(taken(scan)),
            };
        }
        if !recorded.inside {
            return Err(Rejection::NotCheckedIn(scan.ticket_id));
        }
        let at_ms = now_ms.max(recorded.last_at_ms());
        // A ticket in may always leave, past `MAX_SCANS_PER_TICKET` too: an exit follows an
        // entry, and entries are bounded, so a ticket holds at most one scan more than the bound.
        self.gate_room(&scan.gate, &Pending::default())?;
        let record = Record::ScansRecorded {
            scans: vec![scan_record(scan, at_ms, ScanKind::Exit)],
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer: (exit(scan, at_ms), true),
        })
    }

    /// Decides scans made offline, each at the time it was made (`at_ms`, at most `now_ms`), in
    /// order: one answer per scan, and one record for all those that change something. A scan of
    /// a ticket already in is recorded as a conflict.
    #[allow(clippy::type_complexity)]
    pub fn upload_scans(
        &mut self,
        scans: &[(Scan, u64)],
        now_ms: u64,
    ) -> Result<Decision<Vec<Result<ScanOutcome, Rejection>>>, Rejection> {
        if scans.is_empty() || scans.len() > MAX_SCANS_PER_UPLOAD {
            return Err(Rejection::Invalid(format!(
                "an upload holds 1..={MAX_SCANS_PER_UPLOAD} scans, not {}",
                scans.len()
            )));
        }
        let mut pending = Pending::default();
        let mut records = Vec::new();
        let mut answers = Vec::with_capacity(scans.len());
        for (scan, at_ms) in scans {
            let at_ms = (*at_ms).min(now_ms);
            let judged = self.judge(scan, at_ms, &pending);
            let answer = judged.and_then(|judged| match judged {
                Judged::New(admission) => {
                    self.scan_room(scan.ticket_id, &pending)?;
                    self.gate_room(&scan.gate, &pending)?;
                    pending.note(scan, Some(&admission), !self.knows_gate(&scan.gate));
                    records.push(scan_record(scan, admission.at_ms, ScanKind::Entry));
                    Ok(ScanOutcome::Admitted(admission))
                }
                Judged::AlreadyIn(first) => {
                    self.scan_room(scan.ticket_id, &pending)?;
                    self.gate_room(&scan.gate, &pending)?;
                    pending.note(scan, None, !self.knows_gate(&scan.gate));
                    records.push(scan_record(scan, at_ms, ScanKind::Conflict));
                    Ok(ScanOutcome::Conflict { first })
                }
                Judged::Repeat { first, admitted } => Ok(ScanOutcome::Repeated { first, admitted }),
            });
            answers.push(answer);
        }
        let record = (!records.is_empty()).then_some(Record::ScansRecorded { scans: records });
        if let Some(r) = &record {
            self.apply(r);
        }
        Ok(Decision {
            record,
            answer: answers,
        })
    }

    /// The event's check-in figures.
    pub fn check_in_stats(&self) -> CheckInStats {
        let admitted: u64 = self.gates.iter().map(|g| g.admitted).sum();
        let exits: u64 = self.gates.iter().map(|g| g.exits).sum();
        CheckInStats {
            tickets_live: self.tickets_live,
            admitted,
            conflicts: self.gates.iter().map(|g| g.conflicts).sum(),
            exits,
            // Every exit ends one entry; the tickets in are the entries not ended.
            inside: admitted - exits,
            gates: self.gates.clone(),
        }
    }

    /// The ids of a scan checked, and its token the very one issued for its ticket: the ticket's
    /// order.
    fn verify(&self, scan: &Scan) -> Result<&OrderState, Rejection> {
        for (what, value) in [("gate_id", &scan.gate), ("scan_id", &scan.scan_id)] {
            if value.is_empty()
                || value.len() > MAX_SCAN_ID_BYTES
                || value.chars().any(char::is_control)
            {
                return Err(Rejection::Invalid(format!(
                    "{what} {} must be 1..={MAX_SCAN_ID_BYTES} bytes without control characters",
                    rejection::quote(value)
                )));
            }
        }
        let invalid = || Rejection::InvalidTicket(scan.ticket_id);
        let &(order_id, index) = self.ticket_index.get(&scan.ticket_id).ok_or_else(invalid)?;
        let order = &self.orders[&order_id];
        let issued = order.issued[index as usize].token.as_bytes();
        // Constant time: the time taken must not tell how much of a guessed token was right.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(issued, scan.token.as_bytes())) {
            return Err(invalid());
        }
        Ok(order)
    }

    /// The ticket of an entry scan, checked: issued by this event as presented, its order paid;
    /// and whether the scan lets it in.
    fn judge(&self, scan: &Scan, at_ms: u64, pending: &Pending) -> Result<Judged, Rejection> {
        let order = self.verify(scan)?;
        let recorded = self.admissions.get(&scan.ticket_id);
        // A scan recorded before repeats its outcome, whatever happened to the order since.
        let key = (scan.ticket_id, scan.scan_id.clone(), scan.gate.clone());
        if pending.scans.contains(&key) {
            let first = match pending.admitted.get(&scan.ticket_id) {
                Some(a) => a,
                None => {
                    &recorded
                        .expect("a conflict in an upload of a ticket in")
                        .admission
                }
            };
            return Ok(Judged::Repeat {
                first: first.clone(),
                admitted: first.scan_id == scan.scan_id && first.gate == scan.gate,
            });
        }
        if let Some(r) = recorded {
            match r.find(&scan.scan_id, &scan.gate) {
                Some(e) if e.kind == ScanKind::Entry => {
                    return Ok(Judged::Repeat {
                        first: Admission {
                            ticket_id: scan.ticket_id,
                            gate: e.gate.clone(),
                            scan_id: e.scan_id.clone(),
                            at_ms: e.at_ms,
                        },
                        admitted: true,
                    });
                }
                Some(e) if e.kind == ScanKind::Conflict => {
                    let first = pending.admitted.get(&scan.ticket_id);
                    return Ok(Judged::Repeat {
                        first: first.unwrap_or(&r.admission).clone(),
                        admitted: false,
                    });
                }
                Some(_) => return Err(taken(scan)),
                None => {}
            }
        }
        if order.status != OrderStatus::Paid {
            return Err(Rejection::TicketVoid {
                ticket: scan.ticket_id,
                status: order.status,
            });
        }
        if let Some(first) = pending.admitted.get(&scan.ticket_id) {
            return Ok(Judged::AlreadyIn(first.clone()));
        }
        match recorded {
            Some(r) if r.inside => Ok(Judged::AlreadyIn(r.admission.clone())),
            // Left (re-entry allowed), but this scan was made before it left: an offline scan
            // uploaded late cannot be its next entry; it conflicts with the admission it came
            // after.
            Some(r) if at_ms < r.last_exit_ms() => Ok(Judged::AlreadyIn(r.admission.clone())),
            // Never in, or left with re-entry allowed (only then is a ticket out again).
            _ => Ok(Judged::New(Admission {
                ticket_id: scan.ticket_id,
                gate: scan.gate.clone(),
                scan_id: scan.scan_id.clone(),
                // Not before the ticket was issued, nor before its last exit, whatever a
                // scanner's clock said.
                at_ms: at_ms
                    .max(order.payment.as_ref().map_or(0, |p| p.paid_at_ms))
                    .max(recorded.map_or(0, TicketScans::last_at_ms)),
            })),
        }
    }

    /// Whether one more scan of `ticket` may be recorded: at most `MAX_SCANS_PER_TICKET`.
    fn scan_room(&self, ticket: TicketId, pending: &Pending) -> Result<(), Rejection> {
        if self.scan_count(ticket, pending) >= MAX_SCANS_PER_TICKET {
            return Err(Rejection::CheckInLimit(format!(
                "ticket {ticket} has {MAX_SCANS_PER_TICKET} scans recorded, the most"
            )));
        }
        Ok(())
    }

    /// Whether a scan at `gate` may be recorded: the event counts at most
    /// `MAX_GATES_PER_EVENT` gates.
    fn gate_room(&self, gate: &str, pending: &Pending) -> Result<(), Rejection> {
        if !self.knows_gate(gate)
            && !pending.gates.contains(gate)
            && self.gates.len() + pending.gates.len() >= MAX_GATES_PER_EVENT
        {
            return Err(Rejection::CheckInLimit(format!(
                "the event counts {MAX_GATES_PER_EVENT} gates, the most; gate {} is one more",
                rejection::quote(gate)
            )));
        }
        Ok(())
    }

    fn knows_gate(&self, gate: &str) -> bool {
        self.gates.iter().any(|g| g.gate == gate)
    }

    fn scan_count(&self, ticket: TicketId, pending: &Pending) -> usize {
        let recorded = self.admissions.get(&ticket).map_or(0, |r| r.scans.len());
        let in_upload = pending
            .scans
            .iter()
            .filter(|(t, _, _)| *t == ticket)
            .count();
        recorded + in_upload
    }

    // ------------------------------------------------------------------------------------------
    // Applying records, called by `apply`.
    // ------------------------------------------------------------------------------------------

    /// Performs `Record::ScansRecorded`.
    pub(super) fn apply_scans_recorded(&mut self, scans: &[ScanRecord]) {
        for s in scans {
            let (order_id, _) = *self
                .ticket_index
                .get(&s.ticket_id)
                .unwrap_or_else(|| panic!("scanned ticket {} was never issued", s.ticket_id));
            if s.kind != ScanKind::Exit {
                assert_eq!(
                    self.orders[&order_id].status,
                    OrderStatus::Paid,
                    "ticket {} scanned in",
                    s.ticket_id
                );
            }
            let gate = match self.gates.iter().position(|g| g.gate == s.gate) {
                Some(g) => g,
                None => {
                    self.text_bytes += footprint::heap(s.gate.len());
                    self.gates.push(GateCounts {
                        gate: s.gate.clone(),
                        admitted: 0,
                        conflicts: 0,
                        exits: 0,
                    });
                    self.gates.len() - 1
                }
            };
            let entry = ScanEntry {
                scan_id: s.scan_id.clone(),
                gate: s.gate.clone(),
                at_ms: s.at_ms,
                kind: s.kind,
            };
            let admission = Admission {
                ticket_id: s.ticket_id,
                gate: s.gate.clone(),
                scan_id: s.scan_id.clone(),
                at_ms: s.at_ms,
            };
            let reentry = self.spec.allow_reentry;
            let Some(scans) = self.admissions.get_mut(&s.ticket_id) else {
                assert_eq!(s.kind, ScanKind::Entry, "ticket {} not in", s.ticket_id);
                let scans = TicketScans {
                    admission,
                    inside: true,
                    scans: vec![entry],
                };
                self.text_bytes += scans_text(&scans);
                self.admissions.insert(s.ticket_id, scans);
                self.gates[gate].admitted += 1;
                continue;
            };
            assert!(
                scans.find(&entry.scan_id, &entry.gate).is_none(),
                "scan {} of ticket {} recorded twice",
                s.scan_id,
                s.ticket_id
            );
            let before = scans_text(scans);
            match s.kind {
                ScanKind::Entry => {
                    assert!(
                        reentry && !scans.inside,
                        "ticket {} admitted twice",
                        s.ticket_id
                    );
                    scans.admission = admission;
                    scans.inside = true;
                    self.gates[gate].admitted += 1;
                }
                ScanKind::Conflict => self.gates[gate].conflicts += 1,
                ScanKind::Exit => {
                    assert!(
                        reentry && scans.inside,
                        "ticket {} left, not in",
                        s.ticket_id
                    );
                    scans.inside = false;
                    self.gates[gate].exits += 1;
                }
            }
            scans.scans.push(entry);
            self.text_bytes += scans_text(scans) - before;
        }
    }

    /// Adds the tickets of a paid order to the index of tickets and to the live ones.
    pub(super) fn index_tickets(&mut self, order_id: OrderId, tickets: &[TicketRecord]) {
        for (i, t) in tickets.iter().enumerate() {
            let before = self.ticket_index.insert(t.id, (order_id, i as u32));
            assert!(before.is_none(), "ticket {} issued twice", t.id);
        }
        self.tickets_live += tickets.len() as u64;
    }

    /// Whether `apply_scans_recorded` can perform `scans` on this state (see `replay.rs`):
    /// every ticket issued and, unless leaving, of a paid order; the first scan of a ticket lets
    /// it in; a scan id at a gate recorded once; entries and exits alternate, exits only with
    /// re-entry; at most `MAX_SCANS_PER_TICKET` scans and the exit after them.
    pub(super) fn check_scans(&self, scans: &[ScanRecord]) -> Result<(), String> {
        /// A ticket's state after the record's own scans so far: in or not, and the (scan id,
        /// gate) pairs they added.
        #[derive(Default)]
        struct Seen<'a> {
            inside: bool,
            added: Vec<(&'a str, &'a str)>,
        }
        let mut seen: HashMap<TicketId, Seen> = HashMap::default();
        for s in scans {
            let Some((order_id, _)) = self.ticket_index.get(&s.ticket_id).copied() else {
                return Err(format!("ticket {} was never issued", s.ticket_id));
            };
            if s.kind != ScanKind::Exit {
                let status = self.orders.get(&order_id).map(|o| o.status);
                ensure!(
                    status == Some(OrderStatus::Paid),
                    "ticket {} scanned in, its order {order_id} is {status:?}",
                    s.ticket_id
                );
            }
            let kept = self.admissions.get(&s.ticket_id);
            let Seen { inside, added } = seen.entry(s.ticket_id).or_insert_with(|| Seen {
                inside: kept.is_some_and(|k| k.inside),
                added: Vec::new(),
            });
            if kept.is_none() && added.is_empty() {
                ensure!(
                    s.kind == ScanKind::Entry,
                    "ticket {} not in, scanned {:?}",
                    s.ticket_id,
                    s.kind
                );
            }
            ensure!(
                kept.is_none_or(|k| k.find(&s.scan_id, &s.gate).is_none())
                    && !added.contains(&(s.scan_id.as_str(), s.gate.as_str())),
                "scan {} of ticket {} recorded twice",
                s.scan_id,
                s.ticket_id
            );
            let first = kept.is_none() && added.is_empty();
            match s.kind {
                ScanKind::Entry if first => *inside = true,
                ScanKind::Entry => {
                    ensure!(
                        self.spec.allow_reentry && !*inside,
                        "ticket {} admitted twice",
                        s.ticket_id
                    );
                    *inside = true;
                }
                ScanKind::Conflict => {}
                ScanKind::Exit => {
                    ensure!(
                        self.spec.allow_reentry && *inside,
                        "ticket {} left, not in",
                        s.ticket_id
                    );
                    *inside = false;
                }
            }
            added.push((s.scan_id.as_str(), s.gate.as_str()));
            let count = kept.map_or(0, |k| k.scans.len()) + added.len();
            ensure!(
                count <= MAX_SCANS_PER_TICKET + 1,
                "ticket {} scanned {count} times",
                s.ticket_id
            );
        }
        Ok(())
    }

    /// Checks the check-in state against the orders; part of `check_state`.
    pub(super) fn check_check_ins(&self) -> Result<(), String> {
        let issued: usize = self.orders.iter().map(|(_, o)| o.issued.len()).sum();
        ensure!(self.ticket_index.len() == issued, "ticket index");
        let live: u64 = self
            .orders
            .iter()
            .filter(|(_, o)| o.status == OrderStatus::Paid)
            .map(|(_, o)| o.issued.len() as u64)
            .sum();
        ensure!(self.tickets_live == live, "live tickets");
        let mut counts: HashMap<&str, (u64, u64, u64)> = HashMap::default();
        for (id, scans) in self.admissions.iter() {
            ensure!(self.ticket_index.get(id).is_some(), "admitted ticket {id}");
            ensure!(
                scans.scans.len() <= MAX_SCANS_PER_TICKET + 1,
                "ticket {id} has {} scans",
                scans.scans.len()
            );
            ensure!(
                scans.scans.first().map(|e| e.kind) == Some(ScanKind::Entry),
                "ticket {id}'s scans do not start with an entry"
            );
            // Replayed in order, the scans must leave the ticket where it is, last let in by
            // its admission.
            let mut inside = false;
            let mut last_entry = None;
            for (i, e) in scans.scans.iter().enumerate() {
                let c = counts.entry(&e.gate).or_default();
                match e.kind {
                    ScanKind::Entry => {
                        ensure!(!inside, "ticket {id} let in while in");
                        inside = true;
                        last_entry = Some(e);
                        c.0 += 1;
                    }
                    ScanKind::Conflict => c.1 += 1,
                    ScanKind::Exit => {
                        ensure!(inside, "ticket {id} left while out");
                        inside = false;
                        c.2 += 1;
                    }
                }
                ensure!(
                    scans.scans[..i]
                        .iter()
                        .all(|o| o.scan_id != e.scan_id || o.gate != e.gate),
                    "ticket {id}: scan {} twice",
                    e.scan_id
                );
            }
            ensure!(
                self.spec.allow_reentry || scans.scans.iter().all(|e| e.kind != ScanKind::Exit),
                "ticket {id} left an event without re-entry"
            );
            ensure!(inside == scans.inside, "ticket {id} in: {}", scans.inside);
            let Some(last) = last_entry else {
                return Err(format!("ticket {id} was never let in"));
            };
            let a = &scans.admission;
            ensure!(
                (&a.scan_id, &a.gate, a.at_ms, a.ticket_id)
                    == (&last.scan_id, &last.gate, last.at_ms, *id),
                "ticket {id}'s admission"
            );
        }
        let mut gates = HashSet::default();
        for g in &self.gates {
            ensure!(gates.insert(g.gate.as_str()), "gate {} twice", g.gate);
            ensure!(
                counts.get(g.gate.as_str()).copied().unwrap_or_default()
                    == (g.admitted, g.conflicts, g.exits),
                "scans at gate {}",
                g.gate
            );
        }
        ensure!(
            counts.len() == self.gates.len(),
            "scans at gates the event does not count"
        );
        Ok(())
    }
}

enum Judged {
    /// Not in yet: this scan lets it in.
    New(Admission),
    /// In already, by `first`.
    AlreadyIn(Admission),
    /// This very scan was recorded before.
    Repeat { first: Admission, admitted: bool },
}

impl Pending {
    /// A scan recorded by this decision: its admission if it lets the ticket in, and whether its
    /// gate is new to the event.
    fn note(&mut self, scan: &Scan, admission: Option<&Admission>, new_gate: bool) {
        if let Some(a) = admission {
            self.admitted.insert(scan.ticket_id, a.clone());
        }
        self.scans
            .insert((scan.ticket_id, scan.scan_id.clone(), scan.gate.clone()));
        if new_gate {
            self.gates.insert(scan.gate.clone());
        }
    }
}

/// Heap bytes of a ticket's scans: the admission's strings, and the list of scans with theirs.
pub(super) fn scans_text(scans: &TicketScans) -> u64 {
    let entry = std::mem::size_of::<ScanEntry>();
    footprint::heap(scans.admission.gate.len())
        + footprint::heap(scans.admission.scan_id.len())
        + footprint::heap(scans.scans.len() * entry)
        + scans
            .scans
            .iter()
            .map(|e| footprint::heap(e.scan_id.len()) + footprint::heap(e.gate.len()))
            .sum::<u64>()
}

fn scan_record(scan: &Scan, at_ms: u64, kind: ScanKind) -> ScanRecord {
    ScanRecord {
        ticket_id: scan.ticket_id,
        gate: scan.gate.clone(),
        scan_id: scan.scan_id.clone(),
        at_ms,
        kind,
    }
}

fn exit(scan: &Scan, at_ms: u64) -> Exit {
    Exit {
        ticket_id: scan.ticket_id,
        gate: scan.gate.clone(),
        scan_id: scan.scan_id.clone(),
        at_ms,
    }
}

fn taken(scan: &Scan) -> Rejection {
    Rejection::ScanIdTaken {
        ticket: scan.ticket_id,
        gate: scan.gate.clone(),
        scan_id: scan.scan_id.clone(),
    }
}

fn already(first: Admission) -> Rejection {
    Rejection::AlreadyCheckedIn {
        ticket: first.ticket_id,
        gate: first.gate,
        scan_id: first.scan_id,
        at_ms: first.at_ms,
    }
}
