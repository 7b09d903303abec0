//! The fan-out's index and planner, free of I/O: which connection gets what message at
//! `now_ms`. The runner ([`super::run`]) feeds it and carries out its plans.
//!
//! # State
//!
//! - **Connections**, by id, each with its subscription (symbols, `max_rate_ms` clamped to
//!   [`MIN_RATE_MS`]..=[`MAX_RATE_MS`]), what is pending for it (a bit per subscribed symbol
//!   that changed since its last message), when its last message went out, whether a push
//!   is in flight, its retry state and the PnL text it was last sent.
//! - **symbol → connections** (the subscribers of each symbol) and **account →
//!   connections**; an account also holds its [`PositionsSnapshot`] once known and the
//!   symbols it holds (symbol → holding accounts), so a price change marks the PnL of the
//!   accounts holding it.
//! - The latest quote of every symbol seen, and its JSON text (built once per change, shared
//!   by every message that carries it).
//! - A queue of connections that may have something to send.
//!
//! # Planning ([`Fanout::plan`])
//!
//! For each queued connection: nothing while a push to it is in flight (its changes
//! accumulate; the completion queues it again); nothing before `last_sent + max_rate_ms`
//! (less [`RATE_JITTER_MS`], the flush timer's jitter) nor
//! before its retry time (it stays queued, so the next tick looks again). Otherwise one
//! message: the latest quote of every pending symbol, plus the account's PnL when its text
//! differs from what this connection was last sent; a `pnl` message when only the PnL moved;
//! no message when neither (only if changed). The PnL of an account is recomputed at most
//! once per plan, and only when a price it holds or its snapshot changed and one of its
//! connections is ready to send.
//!
//! # Completion ([`Fanout::complete`])
//!
//! Sent: done. Gone (410): the connection is dropped from the index (the runner deletes its
//! item). Too large: dropped content, logged by the runner. Failed: the symbols it carried
//! are pending again (the latest quote will go), the PnL counts as not sent, and the next
//! attempt waits `100 ms · 2^(n-1)` capped at 5 s (`n` = consecutive failures).
//!
//! # Re-scans ([`Fanout::begin_scan`], [`Fanout::finish_scan`])
//!
//! A scan of the table runs concurrently with change notifications. The scan's result
//! replaces the index except where a notification applied after the scan began is newer:
//! a connection put or deleted since [`Fanout::begin_scan`] keeps its notified state.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use domain::quote::Quote;
use domain::realtime::{
    AccountPnl, Connection, ConnectionChange, PositionsSnapshot, MAX_RATE_MS, MIN_RATE_MS,
};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A connection is ready this much before `last_sent + max_rate_ms`. Plans follow the
/// flushes, which come every 100 ms give or take a few ms of scheduling; without the
/// tolerance a connection at the 100 ms rate whose last plan ran a little late would miss
/// the next flush and wait for the timer tick after it (up to 100 ms more latency).
pub const RATE_JITTER_MS: i64 = 10;

/// First retry delay after a failed push.
pub const RETRY_BASE_MS: i64 = 100;
/// Longest retry delay.
pub const RETRY_MAX_MS: i64 = 5_000;

/// The wait before the next attempt after `failures` consecutive failed pushes (≥ 1):
/// 100 ms, 200 ms, 400 ms … capped at 5 s.
pub fn retry_delay_ms(failures: u32) -> i64 {
    let shift = failures.saturating_sub(1).min(16);
    (RETRY_BASE_MS << shift).min(RETRY_MAX_MS)
}

type SymId = u32;
type Slot = u32;

/// One message to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub connection_id: Arc<str>,
    /// Identifies this incarnation of the connection id; passed back to
    /// [`Fanout::complete`].
    pub generation: u64,
    /// The message: `prices` (with `pnl` when it moved) or `pnl`, as
    /// [`domain::realtime::update_message`] builds it.
    pub body: String,
    /// Quotes carried.
    pub prices: usize,
    /// Whether it carries the account's PnL.
    pub pnl: bool,
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// 410: the client is gone.
    Gone,
    /// 413: the message was over API Gateway's limit; its content is dropped.
    TooLarge,
    /// Anything else: retried with backoff.
    Failed,
}

/// Counters kept by the planner (totals since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    /// Symbol changes merged into a change already pending for a connection (latest wins).
    pub coalesced: u64,
    /// Connections dropped because their TTL passed.
    pub expired: u64,
    /// PnL recomputations.
    pub pnl_computed: u64,
}

/// What a finished scan changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub scanned: usize,
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

struct InFlight {
    syms: Vec<SymId>,
    /// `pnl_sent` before this message, restored if it fails.
    prev_pnl: Option<Arc<str>>,
    carried_pnl: bool,
}

struct Conn {
    id: Arc<str>,
    generation: u64,
    record: Connection,
    /// Subscribed symbols, sorted by id.
    syms: Vec<SymId>,
    /// Bit `i` set: `syms[i]` changed since the last message (`i` < 64; the rest in
    /// `pending_more`, 64 a word).
    pending: u64,
    pending_more: Vec<u64>,
    rate_ms: i64,
    last_sent: Option<i64>,
    retry_at: i64,
    failures: u32,
    in_flight: Option<InFlight>,
    pnl_sent: Option<Arc<str>>,
    queued: bool,
    /// `Fanout::seq` when it was last put.
    changed_at: u64,
}

impl Conn {
    fn has_pending(&self) -> bool {
        self.pending != 0 || self.pending_more.iter().any(|w| *w != 0)
    }

    /// Marks `syms[pos]` pending; whether it was already.
    fn mark_at(&mut self, pos: usize) -> bool {
        let b = 1u64 << (pos % 64);
        let word = match pos / 64 {
            0 => &mut self.pending,
            w => &mut self.pending_more[w - 1],
        };
        let was = *word & b != 0;
        *word |= b;
        was
    }

    fn mark(&mut self, sym: SymId) -> Option<bool> {
        let pos = self.syms.binary_search(&sym).ok()?;
        Some(self.mark_at(pos))
    }

    fn reset_pending(&mut self) {
        self.pending = 0;
        self.pending_more = vec![0; self.syms.len().saturating_sub(1) / 64];
    }

    /// The pending symbols, cleared.
    fn take_pending(&mut self) -> Vec<SymId> {
        let mut out = Vec::new();
        let words = std::iter::once(&mut self.pending).chain(self.pending_more.iter_mut());
        for (w, word) in words.enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                out.push(self.syms[w * 64 + i]);
                bits &= bits - 1;
            }
        }
        out
    }
}

#[derive(Default)]
struct Account {
    conns: Vec<Slot>,
    snapshot: Option<PositionsSnapshot>,
    held: Vec<SymId>,
    /// The PnL JSON text on the latest quotes, when computed and a snapshot is known.
    pnl: Option<Arc<str>>,
    pnl_dirty: bool,
}

struct ScanState {
    mark: u64,
    tombstones: HashSet<Arc<str>>,
}

/// The index and planner. See the module documentation.
#[derive(Default)]
pub struct Fanout {
    slots: Vec<Option<Conn>>,
    free: Vec<Slot>,
    ids: HashMap<Arc<str>, Slot>,
    next_generation: u64,
    sym_ids: HashMap<Arc<str>, SymId>,
    latest: Vec<Option<Quote>>,
    /// JSON text of `latest[i]`, built on first use after each change.
    fragments: Vec<Option<Box<str>>>,
    /// Per symbol: (connection, position of the symbol in its `syms`).
    subscribers: Vec<Vec<(Slot, u32)>>,
    holders: Vec<Vec<Uuid>>,
    accounts: HashMap<Uuid, Account>,
    queue: Vec<(Slot, u64)>,
    snapshot_requests: Vec<Uuid>,
    /// Every account's snapshot is to be read again.
    reload_snapshots: bool,
    /// Counts puts and removals (for scans).
    seq: u64,
    scan: Option<ScanState>,
    counts: PlanCounts,
}

/// Appends `v` as a JSON string (symbols need no escaping; anything else goes through
/// serde_json).
fn push_json_str(out: &mut String, v: &str) {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'=' | b'/'))
    {
        out.push('"');
        out.push_str(v);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(v).to_string());
    }
}

/// Appends a decimal as a JSON string, as [`domain::decimal::to_text`] writes it.
fn push_decimal(out: &mut String, d: &Decimal) {
    out.push('"');
    let _ = write!(out, "{}", d.normalize());
    out.push('"');
}

/// Writes the members of one JSON object in order. Member names are literals of ours
/// (plain ASCII), so they are written without escaping.
struct Members<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Members<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Members { out, first: true }
    }

    fn name(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn str(&mut self, name: &str, v: &str) {
        push_json_str(self.name(name), v);
    }

    fn decimal(&mut self, name: &str, d: &Decimal) {
        push_decimal(self.name(name), d);
    }

    fn opt_decimal(&mut self, name: &str, d: Option<&Decimal>) {
        match d {
            Some(d) => self.decimal(name, d),
            None => self.name(name).push_str("null"),
        }
    }

    /// A value already written as JSON (a number, `true`, an array…).
    fn raw(&mut self, name: &str, json: &str) {
        self.name(name).push_str(json);
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// The JSON object of one quote inside a `prices` message (what
/// [`domain::realtime::update_message`] writes for it), written directly: it is built once
/// per changed symbol and flush, and shared by every message that carries it.
pub fn quote_fragment(q: &Quote) -> String {
    let mut s = String::with_capacity(96);
    let mut m = Members::open(&mut s);
    m.str("symbol", &q.symbol);
    m.decimal("bid", &q.bid);
    m.decimal("ask", &q.ask);
    m.opt_decimal("last", q.last.as_ref());
    let _ = write!(m.name("ts"), "{}", q.ts);
    m.close();
    s
}

/// The `pnl` object of an account ([`AccountPnl::to_json`], written directly: an account's
/// PnL is recomputed whenever a price it holds changes).
pub fn pnl_json(pnl: &AccountPnl) -> String {
    let mut s = String::with_capacity(96 + 192 * pnl.positions.len());
    let mut m = Members::open(&mut s);
    m.decimal("cash", &pnl.cash);
    m.opt_decimal("equity", pnl.equity.as_ref());
    m.decimal("unrealized_pl", &pnl.unrealized_pl);
    let out = m.name("positions");
    out.push('[');
    for (i, p) in pnl.positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut position = Members::open(out);
        position.str("symbol", &p.symbol);
        position.decimal("qty", &p.qty);
        position.decimal("avg_entry_price", &p.avg_entry_price);
        position.opt_decimal("current_price", p.current_price.as_ref());
        position.opt_decimal("market_value", p.market_value.as_ref());
        position.opt_decimal("unrealized_pl", p.unrealized_pl.as_ref());
        let stale = if p.current_price.is_none() {
            "true"
        } else {
            "false"
        };
        position.raw("price_stale", stale);
        position.close();
    }
    out.push(']');
    m.close();
    s
}

/// The message text from quote fragments and an optional PnL text: the same JSON as
/// [`domain::realtime::update_message`], assembled from pieces built once per change.
pub fn message_body<'a>(
    ts: i64,
    fragments: impl IntoIterator<Item = &'a str> + Clone,
    pnl: Option<&str>,
) -> String {
    let size: usize = fragments.clone().into_iter().map(|f| f.len() + 1).sum();
    let mut s = String::with_capacity(64 + size + pnl.map_or(0, str::len));
    let mut it = fragments.into_iter().peekable();
    if it.peek().is_none() {
        let _ = write!(s, r#"{{"type":"pnl","ts":{ts}"#);
    } else {
        let _ = write!(s, r#"{{"type":"prices","ts":{ts},"prices":["#);
        for (i, f) in it.enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(f);
        }
        s.push(']');
    }
    if let Some(p) = pnl {
        s.push_str(r#","pnl":"#);
        s.push_str(p);
    }
    s.push('}');
    s
}

fn pnl_text(
    snapshot: &PositionsSnapshot,
    sym_ids: &HashMap<Arc<str>, SymId>,
    latest: &[Option<Quote>],
) -> String {
    pnl_json(&AccountPnl::value(snapshot, |s| {
        sym_ids
            .get(s)
            .and_then(|&i| latest.get(i as usize))
            .and_then(Option::as_ref)
    }))
}

fn clamp_rate(ms: u32) -> i64 {
    i64::from(ms.clamp(MIN_RATE_MS, MAX_RATE_MS))
}

fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

fn unsubscribe(list: &mut Vec<(Slot, u32)>, slot: Slot) {
    if let Some(i) = list.iter().position(|(x, _)| *x == slot) {
        list.swap_remove(i);
    }
}

fn remove_from<T: PartialEq>(list: &mut Vec<T>, item: &T) {
    if let Some(i) = list.iter().position(|x| x == item) {
        list.swap_remove(i);
    }
}

impl Fanout {
    pub fn new() -> Fanout {
        Fanout::default()
    }

    /// Live connections in the index.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Accounts with at least one connection.
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// Accounts whose positions snapshot is known.
    pub fn snapshots(&self) -> usize {
        self.accounts
            .values()
            .filter(|a| a.snapshot.is_some())
            .count()
    }

    pub fn contains(&self, connection_id: &str) -> bool {
        self.ids.contains_key(connection_id)
    }

    /// Whether `connection_id` is still the connection a message of `generation` was
    /// planned for (not removed, nor removed and added again, since).
    pub fn is_current(&self, connection_id: &str, generation: u64) -> bool {
        self.ids
            .get(connection_id)
            .and_then(|&slot| self.conn(slot))
            .is_some_and(|c| c.generation == generation)
    }

    /// The record of a connection in the index.
    pub fn connection(&self, connection_id: &str) -> Option<&Connection> {
        let slot = *self.ids.get(connection_id)?;
        self.conn(slot).map(|c| &c.record)
    }

    /// Ids of every connection in the index (unordered).
    pub fn connection_ids(&self) -> Vec<String> {
        self.ids.keys().map(|k| k.to_string()).collect()
    }

    /// Connections of an account (ids, unordered).
    pub fn connections_of(&self, account_id: Uuid) -> Vec<String> {
        self.accounts
            .get(&account_id)
            .map(|a| {
                a.conns
                    .iter()
                    .filter_map(|&s| self.conn(s).map(|c| c.id.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Pushes planned and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.in_flight.is_some())
            .count()
    }

    pub fn counts(&self) -> PlanCounts {
        self.counts
    }

    /// The latest quote seen for `symbol`.
    pub fn quote(&self, symbol: &str) -> Option<&Quote> {
        let &i = self.sym_ids.get(symbol)?;
        self.latest[i as usize].as_ref()
    }

    fn conn(&self, slot: Slot) -> Option<&Conn> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn sym(&mut self, symbol: &str) -> SymId {
        if let Some(&i) = self.sym_ids.get(symbol) {
            return i;
        }
        let i = self.latest.len() as SymId;
        self.sym_ids.insert(Arc::from(symbol), i);
        self.latest.push(None);
        self.fragments.push(None);
        self.subscribers.push(Vec::new());
        self.holders.push(Vec::new());
        i
    }

    fn queue_slot(slots: &mut [Option<Conn>], queue: &mut Vec<(Slot, u64)>, slot: Slot) {
        if let Some(Some(c)) = slots.get_mut(slot as usize) {
            if !c.queued {
                c.queued = true;
                queue.push((slot, c.generation));
            }
        }
    }

    /// Applies a notification from the ws function.
    pub fn apply(&mut self, change: ConnectionChange, now_ms: i64) {
        match change {
            ConnectionChange::Put { connection } => self.put(connection, now_ms),
            ConnectionChange::Delete { connection_id } => {
                self.remove(&connection_id);
            }
        }
    }

    /// Adds a connection, or replaces the subscription of one in the index. An expired
    /// record removes the connection.
    pub fn put(&mut self, c: Connection, now_ms: i64) {
        if c.is_expired(now_ms) {
            if self.remove(&c.connection_id) {
                self.counts.expired += 1;
            }
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        if let Some(ts) = self.scan.as_mut() {
            ts.tombstones.remove(c.connection_id.as_str());
        }
        let mut syms: Vec<SymId> = c.symbols.iter().map(|s| self.sym(s)).collect();
        syms.sort_unstable();
        syms.dedup();
        match self.ids.get(c.connection_id.as_str()).copied() {
            Some(slot) => self.update(slot, c, syms, seq),
            None => self.insert(c, syms, seq),
        }
    }

    fn insert(&mut self, c: Connection, syms: Vec<SymId>, seq: u64) {
        let id: Arc<str> = Arc::from(c.connection_id.as_str());
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as Slot
            }
        };
        self.next_generation += 1;
        for (pos, &s) in syms.iter().enumerate() {
            self.subscribers[s as usize].push((slot, pos as u32));
        }
        let account = self.accounts.entry(c.account_id).or_insert_with(|| {
            self.snapshot_requests.push(c.account_id);
            Account::default()
        });
        account.conns.push(slot);
        let mut conn = Conn {
            id: id.clone(),
            generation: self.next_generation,
            rate_ms: clamp_rate(c.max_rate_ms),
            record: c,
            syms,
            pending: 0,
            pending_more: Vec::new(),
            last_sent: None,
            retry_at: i64::MIN,
            failures: 0,
            in_flight: None,
            pnl_sent: None,
            queued: false,
            changed_at: seq,
        };
        conn.reset_pending();
        self.slots[slot as usize] = Some(conn);
        self.ids.insert(id, slot);
        // A new connection gets its account's PnL once known.
        Self::queue_slot(&mut self.slots, &mut self.queue, slot);
    }

    fn update(&mut self, slot: Slot, c: Connection, syms: Vec<SymId>, seq: u64) {
        let Some(conn) = self.slots[slot as usize].as_mut() else {
            return;
        };
        // Subscribers: drop the symbols no longer wanted, add the new ones, and renumber.
        for s in &conn.syms {
            if syms.binary_search(s).is_err() {
                unsubscribe(&mut self.subscribers[*s as usize], slot);
            }
        }
        for (pos, s) in syms.iter().enumerate() {
            let list = &mut self.subscribers[*s as usize];
            match list.iter_mut().find(|(x, _)| *x == slot) {
                Some(entry) => entry.1 = pos as u32,
                None => list.push((slot, pos as u32)),
            }
        }
        // Pending changes of symbols still subscribed stay pending.
        let was_pending: Vec<SymId> = conn.take_pending();
        conn.syms = syms;
        conn.reset_pending();
        for s in was_pending {
            conn.mark(s);
        }
        conn.rate_ms = clamp_rate(c.max_rate_ms);
        conn.changed_at = seq;
        let old_account = conn.record.account_id;
        let new_account = c.account_id;
        conn.record = c;
        if old_account != new_account {
            conn.pnl_sent = None;
            self.detach(old_account, slot);
            let account = self.accounts.entry(new_account).or_insert_with(|| {
                self.snapshot_requests.push(new_account);
                Account::default()
            });
            account.conns.push(slot);
        }
        Self::queue_slot(&mut self.slots, &mut self.queue, slot);
    }

    /// Removes `slot` from its account; forgets the account with its last connection.
    fn detach(&mut self, account_id: Uuid, slot: Slot) {
        let Some(account) = self.accounts.get_mut(&account_id) else {
            return;
        };
        remove_from(&mut account.conns, &slot);
        if account.conns.is_empty() {
            if let Some(account) = self.accounts.remove(&account_id) {
                for s in account.held {
                    remove_from(&mut self.holders[s as usize], &account_id);
                }
            }
        }
    }

    /// Drops a connection from the index; whether it was there.
    pub fn remove(&mut self, connection_id: &str) -> bool {
        match self.ids.get(connection_id).copied() {
            Some(slot) => {
                self.remove_slot(slot);
                true
            }
            None => {
                if let Some(ts) = self.scan.as_mut() {
                    ts.tombstones.insert(Arc::from(connection_id));
                }
                false
            }
        }
    }

    fn remove_slot(&mut self, slot: Slot) {
        let Some(conn) = self.slots[slot as usize].take() else {
            return;
        };
        self.seq += 1;
        self.ids.remove(&conn.id);
        self.free.push(slot);
        for s in &conn.syms {
            unsubscribe(&mut self.subscribers[*s as usize], slot);
        }
        self.detach(conn.record.account_id, slot);
        if let Some(ts) = self.scan.as_mut() {
            ts.tombstones.insert(conn.id);
        }
    }

    /// Drops every connection whose TTL passed at `now_ms`; how many.
    pub fn drop_expired(&mut self, now_ms: i64) -> usize {
        let expired: Vec<Slot> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| c.record.is_expired(now_ms))
                    .map(|_| i as Slot)
            })
            .collect();
        for &slot in &expired {
            self.remove_slot(slot);
        }
        self.counts.expired += expired.len() as u64;
        expired.len()
    }

    /// Replaces an account's snapshot (an older one than the current, by `at`, is ignored);
    /// false when the account has no connection here (or the snapshot is older).
    pub fn set_snapshot(&mut self, snapshot: PositionsSnapshot) -> bool {
        let account_id = snapshot.account_id;
        if !self.accounts.contains_key(&account_id) {
            return false;
        }
        let held: Vec<SymId> = {
            let mut v: Vec<SymId> = snapshot
                .positions
                .iter()
                .map(|p| self.sym(&p.symbol))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let Some(account) = self.accounts.get_mut(&account_id) else {
            return false;
        };
        if account
            .snapshot
            .as_ref()
            .is_some_and(|s| s.at > snapshot.at)
        {
            return false;
        }
        for s in &account.held {
            remove_from(&mut self.holders[*s as usize], &account_id);
        }
        for s in &held {
            self.holders[*s as usize].push(account_id);
        }
        account.held = held;
        account.snapshot = Some(snapshot);
        account.pnl_dirty = true;
        for &slot in &account.conns {
            Self::queue_slot(&mut self.slots, &mut self.queue, slot);
        }
        true
    }

    /// The accounts whose snapshot the runner should read: those that got their first
    /// connection and have none yet, or every account after [`Fanout::reload_snapshots`].
    /// Taken.
    pub fn take_snapshot_requests(&mut self) -> Vec<Uuid> {
        let mut wanted = std::mem::take(&mut self.snapshot_requests);
        if std::mem::take(&mut self.reload_snapshots) {
            wanted = self.accounts.keys().copied().collect();
        } else {
            wanted.retain(|a| self.accounts.get(a).is_some_and(|a| a.snapshot.is_none()));
        }
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Asks for every account's snapshot again: after notifications may have been missed
    /// (a pub/sub reconnect), or a failed load. An older one read back changes nothing.
    pub fn reload_snapshots(&mut self) {
        self.reload_snapshots = true;
    }

    /// New quotes (one flush): stored as the latest, marked pending for every subscriber,
    /// and the PnL of every account holding one marked for recomputation.
    pub fn on_quotes(&mut self, quotes: &[Quote]) {
        for q in quotes {
            let id = self.sym(&q.symbol);
            let i = id as usize;
            // The same prices again (a quiet market re-sends its top of book) are no change:
            // the quote is kept for its newer `ts`, nobody is sent it (only if changed).
            let unchanged = self.latest[i]
                .as_ref()
                .is_some_and(|old| old.bid == q.bid && old.ask == q.ask && old.last == q.last);
            self.latest[i] = Some(q.clone());
            self.fragments[i] = None;
            if unchanged {
                continue;
            }
            for &(slot, pos) in &self.subscribers[i] {
                if let Some(Some(c)) = self.slots.get_mut(slot as usize) {
                    if c.mark_at(pos as usize) {
                        self.counts.coalesced += 1;
                    }
                    if !c.queued {
                        c.queued = true;
                        self.queue.push((slot, c.generation));
                    }
                }
            }
            for account_id in &self.holders[i] {
                if let Some(account) = self.accounts.get_mut(account_id) {
                    if !account.pnl_dirty {
                        account.pnl_dirty = true;
                        for &slot in &account.conns {
                            Self::queue_slot(&mut self.slots, &mut self.queue, slot);
                        }
                    }
                }
            }
        }
    }

    /// Quotes read from the price cache (for the PnL of a snapshot just loaded): used where
    /// no flushed quote is known yet; they are no change, so nothing is sent for them as
    /// prices.
    pub fn seed_quotes(&mut self, quotes: impl IntoIterator<Item = Quote>) {
        for q in quotes {
            let i = self.sym(&q.symbol) as usize;
            if self.latest[i].is_some() {
                continue;
            }
            self.latest[i] = Some(q);
            self.fragments[i] = None;
            for account_id in &self.holders[i] {
                if let Some(account) = self.accounts.get_mut(account_id) {
                    account.pnl_dirty = true;
                    for &slot in &account.conns {
                        Self::queue_slot(&mut self.slots, &mut self.queue, slot);
                    }
                }
            }
        }
    }

    /// The messages to push now. Each connection gets at most one, and none while one is in
    /// flight; every returned message must be passed back to [`Fanout::complete`].
    pub fn plan(&mut self, now_ms: i64) -> Vec<Outgoing> {
        let queue = std::mem::take(&mut self.queue);
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (slot, generation) in queue {
            let Some(Some(conn)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if conn.generation != generation || !conn.queued {
                continue;
            }
            conn.queued = false;
            if conn.in_flight.is_some() {
                // The completion queues it again if anything accumulated.
                continue;
            }
            if conn.record.is_expired(now_ms) {
                expired.push(slot);
                continue;
            }
            let ready_at = conn
                .last_sent
                .map_or(i64::MIN, |t| {
                    t.saturating_add(conn.rate_ms - RATE_JITTER_MS)
                })
                .max(conn.retry_at);
            if now_ms < ready_at {
                conn.queued = true;
                self.queue.push((slot, generation));
                continue;
            }
            // The account's PnL, recomputed at most once per change.
            let pnl = match self.accounts.get_mut(&conn.record.account_id) {
                Some(account) => {
                    if account.pnl_dirty {
                        account.pnl_dirty = false;
                        if let Some(snap) = &account.snapshot {
                            self.counts.pnl_computed += 1;
                            let text = pnl_text(snap, &self.sym_ids, &self.latest);
                            if account.pnl.as_deref() != Some(text.as_str()) {
                                account.pnl = Some(Arc::from(text));
                            }
                        }
                    }
                    account.pnl.clone()
                }
                None => None,
            };
            let send_pnl = pnl.is_some() && !same(&pnl, &conn.pnl_sent);
            if !conn.has_pending() && !send_pnl {
                continue;
            }
            let syms = conn.take_pending();
            for &s in &syms {
                let i = s as usize;
                if self.fragments[i].is_none() {
                    if let Some(q) = &self.latest[i] {
                        self.fragments[i] = Some(quote_fragment(q).into_boxed_str());
                    }
                }
            }
            let body = message_body(
                now_ms,
                syms.iter()
                    .filter_map(|&s| self.fragments[s as usize].as_deref()),
                if send_pnl { pnl.as_deref() } else { None },
            );
            let prev_pnl = if send_pnl {
                std::mem::replace(&mut conn.pnl_sent, pnl)
            } else {
                conn.pnl_sent.clone()
            };
            out.push(Outgoing {
                connection_id: conn.id.clone(),
                generation,
                body,
                prices: syms.len(),
                pnl: send_pnl,
            });
            conn.in_flight = Some(InFlight {
                syms,
                prev_pnl,
                carried_pnl: send_pnl,
            });
            conn.last_sent = Some(now_ms);
        }
        for slot in expired {
            self.remove_slot(slot);
            self.counts.expired += 1;
        }
        out
    }

    /// The outcome of a push planned by [`Fanout::plan`]. Returns false when the
    /// connection is no longer the one the message was planned for (removed meanwhile).
    pub fn complete(
        &mut self,
        connection_id: &str,
        generation: u64,
        outcome: Outcome,
        now_ms: i64,
    ) -> bool {
        let Some(&slot) = self.ids.get(connection_id) else {
            return false;
        };
        let Some(conn) = self.slots[slot as usize].as_mut() else {
            return false;
        };
        if conn.generation != generation {
            return false;
        }
        let Some(flight) = conn.in_flight.take() else {
            return false;
        };
        match outcome {
            Outcome::Sent | Outcome::TooLarge => {
                conn.failures = 0;
            }
            Outcome::Gone => {
                self.remove_slot(slot);
                return true;
            }
            Outcome::Failed => {
                conn.failures = conn.failures.saturating_add(1);
                conn.retry_at = now_ms.saturating_add(retry_delay_ms(conn.failures));
                for s in flight.syms {
                    conn.mark(s);
                }
                if flight.carried_pnl {
                    conn.pnl_sent = flight.prev_pnl;
                }
            }
        }
        let account_moved = self
            .accounts
            .get(&conn.record.account_id)
            .is_some_and(|a| a.pnl_dirty || (a.pnl.is_some() && !same(&a.pnl, &conn.pnl_sent)));
        if conn.has_pending() || account_moved {
            Self::queue_slot(&mut self.slots, &mut self.queue, slot);
        }
        true
    }

    /// Starts a re-scan: notifications applied from now on win over the scan's result.
    pub fn begin_scan(&mut self) {
        self.scan = Some(ScanState {
            mark: self.seq,
            tombstones: HashSet::new(),
        });
    }

    /// Whether a scan is in progress.
    pub fn scanning(&self) -> bool {
        self.scan.is_some()
    }

    /// Gives up the scan in progress (it failed).
    pub fn abort_scan(&mut self) {
        self.scan = None;
    }

    /// Makes the index what the scan read, except for connections put or deleted by a
    /// notification since [`Fanout::begin_scan`]. Expired records are skipped.
    pub fn finish_scan(&mut self, scanned: Vec<Connection>, now_ms: i64) -> ScanReport {
        let state = self.scan.take().unwrap_or_else(|| ScanState {
            mark: self.seq,
            tombstones: HashSet::new(),
        });
        let mut report = ScanReport {
            scanned: scanned.len(),
            ..ScanReport::default()
        };
        let mut seen: HashSet<String> = HashSet::with_capacity(scanned.len());
        for c in scanned {
            seen.insert(c.connection_id.clone());
            if c.is_expired(now_ms) || state.tombstones.contains(c.connection_id.as_str()) {
                continue;
            }
            match self.ids.get(c.connection_id.as_str()).copied() {
                Some(slot) => {
                    let Some(conn) = self.conn(slot) else {
                        continue;
                    };
                    if conn.changed_at > state.mark || conn.record == c {
                        continue;
                    }
                    self.put(c, now_ms);
                    report.updated += 1;
                }
                None => {
                    self.put(c, now_ms);
                    report.added += 1;
                }
            }
        }
        let stale: Vec<Slot> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| c.changed_at <= state.mark && !seen.contains(&*c.id))
                    .map(|_| i as Slot)
            })
            .collect();
        report.removed = stale.len();
        for slot in stale {
            self.remove_slot(slot);
        }
        report
    }
}

#[cfg(test)]
mod tests;
