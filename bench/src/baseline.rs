//! The ways the platforms boxoffice replaces reserve tickets, reproduced against real servers so a
//! run can measure them beside boxoffice:
//! - PostgreSQL: per reservation, one transaction that locks the tier's row with
//!   `SELECT ... FOR UPDATE`, decrements it and inserts the hold, committed with the server's
//!   durability settings (reported with the run);
//! - Redis: one Lua script per reservation that checks and decrements the tier and writes the hold,
//!   with the server's AOF policy reported with the run.
//!
//! Both expire holds as those platforms do, with a job every second (a cron or Celery beat) that
//! puts expired holds' tickets back on sale. General admission only; no customer limits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use proto::v1;
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls, Statement};

use crate::target::{EventCounts, Held, Refusal, TierCounts, TierRef};

/// The baselines' expiry job runs this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Connections used one call at a time, as an application worker uses its own: a call waits for
/// an idle one. A connection goes back to the pool when its call ends, also when the call is
/// dropped half-way (a run that ends, a client that gives up).
struct Pool<T> {
    idle: std::sync::Mutex<Vec<T>>,
    permits: Semaphore,
    size: usize,
}

/// A connection taken from a `Pool`, put back on drop.
struct Lease<'a, T> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.idle.lock().expect("pool lock").push(item);
        }
    }
}

impl<T> Pool<T> {
    fn new(items: Vec<T>) -> Pool<T> {
        Pool {
            permits: Semaphore::new(items.len()),
            size: items.len(),
            idle: std::sync::Mutex::new(items),
        }
    }

    async fn with<R>(&self, work: impl AsyncFnOnce(&mut T) -> R) -> R {
        // The lease is declared after the permit, so it is dropped first: the connection is
        // back in the pool before the permit lets the next call take one.
        let _permit = self.permits.acquire().await.expect("never closed");
        let mut lease = Lease {
            pool: self,
            item: self.idle.lock().expect("pool lock").pop(),
        };
        work(lease.item.as_mut().expect("a permit per idle connection")).await
    }
}

fn general_admission(request: &v1::ReserveRequest) -> Result<(String, u32), Refusal> {
    match request.items.as_slice() {
        [item] => match item.selection {
            Some(v1::reserve_item::Selection::Quantity(q)) if q >= 1 => {
                Ok((item.tier_code.clone(), q))
            }
            _ => Err(Refusal::new("INVALID_ARGUMENT")),
        },
        _ => Err(Refusal::new("INVALID_ARGUMENT")),
    }
}

fn ttl_seconds(request: &v1::ReserveRequest) -> u32 {
    request
        .hold_ttl_seconds
        .unwrap_or(server::convert::DEFAULT_HOLD_TTL_SECONDS)
}

/// Hides the password of a connection URL for reports.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bo_tiers (
    event_id text NOT NULL,
    tier_code text NOT NULL,
    capacity bigint NOT NULL,
    available bigint NOT NULL CHECK (available >= 0),
    held bigint NOT NULL CHECK (held >= 0),
    sold bigint NOT NULL CHECK (sold >= 0),
    PRIMARY KEY (event_id, tier_code)
);
CREATE TABLE IF NOT EXISTS bo_holds (
    hold_id text PRIMARY KEY,
    event_id text NOT NULL,
    tier_code text NOT NULL,
    customer_id text NOT NULL,
    quantity bigint NOT NULL,
    state text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bo_holds_open ON bo_holds (expires_at) WHERE state = 'held';
";

const PG_LOCK_TIER: &str =
    "SELECT available FROM bo_tiers WHERE event_id = $1 AND tier_code = $2 FOR UPDATE";
const PG_TAKE: &str = "UPDATE bo_tiers SET available = available - $3, held = held + $3 \
     WHERE event_id = $1 AND tier_code = $2";
const PG_INSERT_HOLD: &str = "INSERT INTO bo_holds \
     (hold_id, event_id, tier_code, customer_id, quantity, state, expires_at) \
     VALUES ($1, $2, $3, $4, $5, 'held', now() + make_interval(secs => $6))";
const PG_CONFIRM_HOLD: &str = "UPDATE bo_holds SET state = 'sold' \
     WHERE hold_id = $1 AND state = 'held' AND expires_at > now() \
     RETURNING event_id, tier_code, quantity";
const PG_HOLD_STATE: &str = "SELECT state FROM bo_holds WHERE hold_id = $1";
const PG_SELL: &str = "UPDATE bo_tiers SET held = held - $3, sold = sold + $3 \
     WHERE event_id = $1 AND tier_code = $2";
const PG_SWEEP: &str = "
WITH expired AS (
    UPDATE bo_holds SET state = 'expired'
    WHERE state = 'held' AND expires_at <= now()
    RETURNING event_id, tier_code, quantity
), sums AS (
    SELECT event_id, tier_code, sum(quantity)::bigint AS quantity FROM expired
    GROUP BY event_id, tier_code
)
UPDATE bo_tiers t SET available = t.available + s.quantity, held = t.held - s.quantity
FROM sums s WHERE t.event_id = s.event_id AND t.tier_code = s.tier_code";
const PG_COUNTS: &str = "SELECT tier_code, capacity, available, held, sold FROM bo_tiers \
     WHERE event_id = $1 ORDER BY tier_code";
const PG_HOLD_SUMS: &str = "SELECT tier_code, \
     coalesce(sum(quantity) FILTER (WHERE state = 'held'), 0)::bigint, \
     coalesce(sum(quantity) FILTER (WHERE state = 'sold'), 0)::bigint \
     FROM bo_holds WHERE event_id = $1 GROUP BY tier_code";

struct PgConnection {
    client: Client,
    lock_tier: Statement,
    take: Statement,
    insert_hold: Statement,
    confirm_hold: Statement,
    hold_state: Statement,
    sell: Statement,
    counts: Statement,
}

impl PgConnection {
    async fn open(url: &str) -> Result<PgConnection> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connect to {}", redact(url)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PgConnection {
            lock_tier: client.prepare(PG_LOCK_TIER).await?,
            take: client.prepare(PG_TAKE).await?,
            insert_hold: client.prepare(PG_INSERT_HOLD).await?,
            confirm_hold: client.prepare(PG_CONFIRM_HOLD).await?,
            hold_state: client.prepare(PG_HOLD_STATE).await?,
            sell: client.prepare(PG_SELL).await?,
            counts: client.prepare(PG_COUNTS).await?,
            client,
        })
    }
}

/// The PostgreSQL baseline: a pool of connections, one transaction per reservation.
pub struct Postgres {
    url: String,
    pool: Pool<PgConnection>,
    sweeper: Client,
}

fn pg_refusal(e: tokio_postgres::Error) -> Refusal {
    // A failed statement or commit may or may not have been applied: the outcome is unknown.
    Refusal::new(match e.code() {
        Some(code) => format!("POSTGRES_{}", code.code()),
        None => "POSTGRES_CONNECTION".into(),
    })
}

impl Postgres {
    pub async fn connect(url: &str, connections: usize) -> Result<Arc<Postgres>> {
        let (sweeper, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connect to {}", redact(url)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sweeper
            .batch_execute(PG_SCHEMA)
            .await
            .context("create the baseline's tables")?;
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            pool.push(PgConnection::open(url).await?);
        }
        Ok(Arc::new(Postgres {
            url: redact(url),
            pool: Pool::new(pool),
            sweeper,
        }))
    }

    pub async fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "{} at {}, {} connections, READ COMMITTED",
            "PostgreSQL", self.url, self.pool.size
        )];
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
        ] {
            if let Ok(row) = self
                .sweeper
                .query_one(&format!("SHOW {setting}"), &[])
                .await
            {
                notes.push(format!("{setting} = {}", row.get::<_, String>(0)));
            }
        }
        notes
    }

    pub async fn create_event(&self, _n: u32, tiers: &[TierRef]) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        for tier in tiers {
            let capacity = i64::try_from(tier.capacity)?;
            self.sweeper
                .execute(
                    "INSERT INTO bo_tiers VALUES ($1, $2, $3, $3, 0, 0)",
                    &[&id, &tier.code, &capacity],
                )
                .await?;
        }
        Ok(id)
    }

    pub async fn reserve(&self, request: &v1::ReserveRequest) -> Result<Held, Refusal> {
        let (tier, quantity) = general_admission(request)?;
        let ttl = f64::from(ttl_seconds(request));
        let hold_id = uuid::Uuid::now_v7().to_string();
        let q = i64::from(quantity);
        self.pool
            .with(async |c: &mut PgConnection| {
                let tx = c.client.transaction().await.map_err(pg_refusal)?;
                let row = tx
                    .query_opt(&c.lock_tier, &[&request.event_id, &tier])
                    .await
                    .map_err(pg_refusal)?;
                let Some(row) = row else {
                    return Err(Refusal::new("EVENT_NOT_FOUND"));
                };
                if row.get::<_, i64>(0) < q {
                    return Err(Refusal::new("SOLD_OUT"));
                }
                tx.execute(&c.take, &[&request.event_id, &tier, &q])
                    .await
                    .map_err(pg_refusal)?;
                tx.execute(
                    &c.insert_hold,
                    &[
                        &hold_id,
                        &request.event_id,
                        &tier,
                        &request.customer_id,
                        &q,
                        &ttl,
                    ],
                )
                .await
                .map_err(pg_refusal)?;
                tx.commit().await.map_err(pg_refusal)?;
                Ok(())
            })
            .await?;
        Ok(Held {
            hold_id,
            quantity,
            seats: vec![],
        })
    }

    pub async fn confirm(&self, hold_id: &str) -> Result<(), Refusal> {
        let hold_id = hold_id.to_string();
        self.pool
            .with(async |c: &mut PgConnection| {
                let tx = c.client.transaction().await.map_err(pg_refusal)?;
                let row = tx
                    .query_opt(&c.confirm_hold, &[&hold_id])
                    .await
                    .map_err(pg_refusal)?;
                let Some(row) = row else {
                    let state = tx
                        .query_opt(&c.hold_state, &[&hold_id])
                        .await
                        .map_err(pg_refusal)?;
                    return Err(Refusal::new(match state {
                        None => "HOLD_NOT_FOUND",
                        Some(row) if row.get::<_, String>(0) == "sold" => "HOLD_ALREADY_CONFIRMED",
                        Some(_) => "HOLD_EXPIRED",
                    }));
                };
                let (event, tier, quantity): (String, String, i64) =
                    (row.get(0), row.get(1), row.get(2));
                tx.execute(&c.sell, &[&event, &tier, &quantity])
                    .await
                    .map_err(pg_refusal)?;
                tx.commit().await.map_err(pg_refusal)
            })
            .await
    }

    pub async fn availability(&self, event_id: &str) -> Result<Vec<TierCounts>, Refusal> {
        let event_id = event_id.to_string();
        self.pool
            .with(async |c: &mut PgConnection| {
                let rows = c
                    .client
                    .query(&c.counts, &[&event_id])
                    .await
                    .map_err(pg_refusal)?;
                Ok(rows
                    .iter()
                    .map(|r| TierCounts {
                        code: r.get(0),
                        capacity: r.get::<_, i64>(1) as u64,
                        available: r.get::<_, i64>(2) as u64,
                        held: r.get::<_, i64>(3) as u64,
                        sold: r.get::<_, i64>(4) as u64,
                    })
                    .collect())
            })
            .await
    }

    /// The expiry job: every expired hold's tickets back on sale, in one statement.
    pub async fn sweep(&self) -> Result<u64> {
        Ok(self.sweeper.execute(PG_SWEEP, &[]).await?)
    }

    /// The tiers' counters, cross-checked against the holds table they summarise.
    pub async fn counts(&self, event_id: &str) -> Result<EventCounts> {
        let tiers = self
            .availability(event_id)
            .await
            .map_err(|r| anyhow::anyhow!("read the tiers: {}", r.reason))?;
        let sums = self.sweeper.query(PG_HOLD_SUMS, &[&event_id]).await?;
        for tier in &tiers {
            let (held, sold) = sums
                .iter()
                .find(|r| r.get::<_, String>(0) == tier.code)
                .map_or((0, 0), |r| (r.get::<_, i64>(1), r.get::<_, i64>(2)));
            ensure!(
                held as u64 == tier.held && sold as u64 == tier.sold,
                "tier {} counts held {} sold {} but its holds add up to held {held} sold {sold}",
                tier.code,
                tier.held,
                tier.sold
            );
        }
        Ok(EventCounts {
            tiers,
            sold_seats: vec![],
        })
    }
}

const REDIS_RESERVE: &str = r"
local available = tonumber(redis.call('HGET', KEYS[1], 'available'))
if available == nil then return -1 end
local q = tonumber(ARGV[1])
if available < q then return 0 end
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'available', -q)
redis.call('HINCRBY', KEYS[1], 'held', q)
redis.call('HSET', KEYS[2], 'event', ARGV[4], 'tier', ARGV[5], 'customer', ARGV[6],
    'quantity', q, 'state', 'held', 'expires_at_ms', expires)
redis.call('ZADD', KEYS[3], expires, ARGV[3])
return 1
";

const REDIS_CONFIRM: &str = r"
local h = redis.call('HMGET', KEYS[1], 'event', 'tier', 'quantity', 'state', 'expires_at_ms')
if not h[1] then return -1 end
if h[4] == 'sold' then return -2 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if h[4] ~= 'held' or tonumber(h[5]) <= now then return -3 end
local q = tonumber(h[3])
local tier = 'bo:tier:' .. h[1] .. ':' .. h[2]
redis.call('HSET', KEYS[1], 'state', 'sold')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', tier, 'held', -q)
redis.call('HINCRBY', tier, 'sold', q)
return 1
";

const REDIS_SWEEP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local key = 'bo:hold:' .. id
  local h = redis.call('HMGET', key, 'event', 'tier', 'quantity', 'state')
  if h[4] == 'held' then
    local q = tonumber(h[3])
    local tier = 'bo:tier:' .. h[1] .. ':' .. h[2]
    redis.call('HSET', key, 'state', 'expired')
    redis.call('HINCRBY', tier, 'available', q)
    redis.call('HINCRBY', tier, 'held', -q)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
";

const REDIS_EXPIRIES: &str = "bo:expiries";
/// Holds the expiry job takes per script call, so one call never blocks Redis for long.
const REDIS_SWEEP_BATCH: u32 = 1_000;

/// The Redis baseline: one Lua script per reservation, over a pool of connections. By default
/// each connection carries one script at a time, as the connection of one application worker
/// does (the PostgreSQL baseline's pool is the same); pipelined, every shopper's script shares the
/// connections, so Redis fsyncs many scripts at once.
pub struct Redis {
    url: String,
    connections: Vec<redis::aio::MultiplexedConnection>,
    /// Indices into `connections`, one call at a time on each; unused when pipelined.
    pool: Pool<usize>,
    pipelined: bool,
    next: std::sync::atomic::AtomicUsize,
    reserve: redis::Script,
    confirm: redis::Script,
    sweep: redis::Script,
}

fn redis_refusal(e: redis::RedisError) -> Refusal {
    Refusal::new(format!("REDIS_{:?}", e.kind()).to_uppercase())
}

impl Redis {
    pub async fn connect(url: &str, connections: usize, pipelined: bool) -> Result<Arc<Redis>> {
        let client =
            redis::Client::open(url).with_context(|| format!("redis address {}", redact(url)))?;
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            pool.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .with_context(|| format!("connect to {}", redact(url)))?,
            );
        }
        Ok(Arc::new(Redis {
            url: redact(url),
            pool: Pool::new((0..pool.len()).collect()),
            connections: pool,
            pipelined,
            next: Default::default(),
            reserve: redis::Script::new(REDIS_RESERVE),
            confirm: redis::Script::new(REDIS_CONFIRM),
            sweep: redis::Script::new(REDIS_SWEEP),
        }))
    }

    fn connection(&self) -> redis::aio::MultiplexedConnection {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.connections[i % self.connections.len()].clone()
    }

    /// Runs `work` on a connection: any, pipelined; else an idle one, waiting for one if none is.
    async fn with<T>(
        &self,
        work: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        if self.pipelined {
            return work(&mut self.connection()).await;
        }
        self.pool
            .with(async |i: &mut usize| work(&mut self.connections[*i].clone()).await)
            .await
    }

    pub async fn notes(&self) -> Vec<String> {
        let mut notes = vec![if self.pipelined {
            format!(
                "Redis at {}, {} connections shared by every shopper (pipelined)",
                self.url,
                self.connections.len()
            )
        } else {
            format!(
                "Redis at {}, {} connections, one script at a time on each (an application worker's connection)",
                self.url,
                self.connections.len()
            )
        }];
        let mut c = self.connection();
        for setting in ["appendonly", "appendfsync"] {
            let answer: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(setting)
                .query_async(&mut c)
                .await;
            if let Ok(pair) = answer {
                notes.push(format!(
                    "{setting} = {}",
                    pair.get(1).cloned().unwrap_or_default()
                ));
            }
        }
        notes
    }

    fn tier_key(event_id: &str, tier: &str) -> String {
        format!("bo:tier:{event_id}:{tier}")
    }

    pub async fn create_event(&self, _n: u32, tiers: &[TierRef]) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut c = self.connection();
        for tier in tiers {
            let () = redis::cmd("HSET")
                .arg(Self::tier_key(&id, &tier.code))
                .arg("capacity")
                .arg(tier.capacity)
                .arg("available")
                .arg(tier.capacity)
                .arg("held")
                .arg(0)
                .arg("sold")
                .arg(0)
                .query_async(&mut c)
                .await?;
        }
        Ok(id)
    }

    pub async fn reserve(&self, request: &v1::ReserveRequest) -> Result<Held, Refusal> {
        let (tier, quantity) = general_admission(request)?;
        let hold_id = uuid::Uuid::now_v7().to_string();
        let mut script = self.reserve.prepare_invoke();
        script
            .key(Self::tier_key(&request.event_id, &tier))
            .key(format!("bo:hold:{hold_id}"))
            .key(REDIS_EXPIRIES)
            .arg(quantity)
            .arg(u64::from(ttl_seconds(request)) * 1_000)
            .arg(&hold_id)
            .arg(&request.event_id)
            .arg(&tier)
            .arg(&request.customer_id);
        let answer: i64 = self
            .with(async |c: &mut redis::aio::MultiplexedConnection| {
                script.invoke_async(c).await.map_err(redis_refusal)
            })
            .await?;
        match answer {
            1 => Ok(Held {
                hold_id,
                quantity,
                seats: vec![],
            }),
            0 => Err(Refusal::new("SOLD_OUT")),
            _ => Err(Refusal::new("EVENT_NOT_FOUND")),
        }
    }

    pub async fn confirm(&self, hold_id: &str) -> Result<(), Refusal> {
        let mut script = self.confirm.prepare_invoke();
        script
            .key(format!("bo:hold:{hold_id}"))
            .key(REDIS_EXPIRIES)
            .arg(hold_id);
        let answer: i64 = self
            .with(async |c: &mut redis::aio::MultiplexedConnection| {
                script.invoke_async(c).await.map_err(redis_refusal)
            })
            .await?;
        match answer {
            1 => Ok(()),
            -1 => Err(Refusal::new("HOLD_NOT_FOUND")),
            -2 => Err(Refusal::new("HOLD_ALREADY_CONFIRMED")),
            _ => Err(Refusal::new("HOLD_EXPIRED")),
        }
    }

    /// The event's tiers as a storefront polls them: one HMGET per tier.
    pub async fn availability(
        &self,
        event_id: &str,
        tiers: &[TierRef],
    ) -> Result<Vec<TierCounts>, Refusal> {
        let mut counts = Vec::with_capacity(tiers.len());
        for tier in tiers {
            counts.push(self.tier_counts(event_id, &tier.code).await?);
        }
        Ok(counts)
    }

    async fn tier_counts(&self, event_id: &str, tier: &str) -> Result<TierCounts, Refusal> {
        let mut command = redis::cmd("HMGET");
        command
            .arg(Self::tier_key(event_id, tier))
            .arg("capacity")
            .arg("available")
            .arg("held")
            .arg("sold");
        let values: Vec<Option<u64>> = self
            .with(async |c: &mut redis::aio::MultiplexedConnection| {
                command.query_async(c).await.map_err(redis_refusal)
            })
            .await?;
        match values.as_slice() {
            [Some(capacity), Some(available), Some(held), Some(sold)] => Ok(TierCounts {
                code: tier.to_string(),
                capacity: *capacity,
                available: *available,
                held: *held,
                sold: *sold,
            }),
            _ => Err(Refusal::new("EVENT_NOT_FOUND")),
        }
    }

    /// The expiry job: every expired hold's tickets back on sale, a batch per script call.
    pub async fn sweep(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let swept: u64 = self
                .sweep
                .key(REDIS_EXPIRIES)
                .arg(REDIS_SWEEP_BATCH)
                .invoke_async(&mut self.connection())
                .await?;
            total += swept;
            if swept < u64::from(REDIS_SWEEP_BATCH) {
                return Ok(total);
            }
        }
    }

    pub async fn counts(&self, event_id: &str, tiers: &[TierRef]) -> Result<EventCounts> {
        let tiers = self
            .availability(event_id, tiers)
            .await
            .map_err(|r| anyhow::anyhow!("read the tiers: {}", r.reason))?;
        Ok(EventCounts {
            tiers,
            sold_seats: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_stay_out_of_reports() {
        assert_eq!(
            redact("postgres://bench:secret@127.0.0.1:5432/db"),
            "postgres://bench:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("postgres://bench@127.0.0.1/db"),
            "postgres://bench@127.0.0.1/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
