//! Coalescing of unary `Reserve` calls: concurrent calls for one event are gathered into one
//! `reserve_many`, so a thousand shoppers calling at once cost a few actor turns and commit
//! submissions instead of a thousand. Measured on the 2-core machine (bench `grpc`, 1,000 calls in
//! flight): one actor call per Reserve reached 45k/s; see ARCHITECTURE.md for the coalesced figure.
//!
//! Each event gets a queue (bounded by the event's in-flight limit; a full queue answers
//! OVERLOADED at once) and a task that takes whatever has queued, up to a batch, and sends it to
//! the actor. At most `MAX_BATCHES_IN_FLIGHT` batches per event are decided at a time: while they
//! are, new calls gather into the next batch, so batches grow with load and stay at one call when
//! the event is quiet.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use engine::inventory::{EventId, Hold, ReserveRequest};
use engine::{Engine, Error};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Batches one event has with its actor at a time: two, so one is being decided while the
/// previous one waits for its flush.
const MAX_BATCHES_IN_FLIGHT: usize = 2;

type Waiting = (ReserveRequest, oneshot::Sender<Result<Hold, Error>>);

/// One queue per event, made on the event's first Reserve.
pub struct Coalescer {
    engine: Arc<Engine>,
    queues: RwLock<HashMap<EventId, mpsc::Sender<Waiting>>>,
    queue_len: usize,
    max_batch: usize,
}

impl Coalescer {
    pub fn new(engine: Arc<Engine>, queue_len: usize, max_batch: usize) -> Coalescer {
        Coalescer {
            engine,
            queues: RwLock::new(HashMap::new()),
            queue_len: queue_len.max(1),
            max_batch: max_batch.max(1),
        }
    }

    /// Reserves through the event's queue; the answer is the one `EventHandle::reserve` gives.
    pub async fn reserve(&self, event: EventId, request: ReserveRequest) -> Result<Hold, Error> {
        let queue = self.queue(event)?;
        let (tx, rx) = oneshot::channel();
        queue.try_send((request, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded {
                event,
                limit: self.queue_len as u32,
                retry_after_ms: engine::registry::OVERLOAD_RETRY_AFTER_MS,
            },
            mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
        })?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    fn queue(&self, event: EventId) -> Result<mpsc::Sender<Waiting>, Error> {
        if let Some(q) = self.queues.read().expect("queues lock").get(&event) {
            return Ok(q.clone());
        }
        let handle = self.engine.event(event)?;
        let mut queues = self.queues.write().expect("queues lock");
        Ok(queues
            .entry(event)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.queue_len);
                tokio::spawn(drain(handle, rx, self.max_batch));
                tx
            })
            .clone())
    }
}

/// Takes what has queued, up to `max_batch`, and decides it as one batch; ends when every sender
/// is gone.
async fn drain(handle: engine::EventHandle, mut queue: mpsc::Receiver<Waiting>, max_batch: usize) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        metrics::histogram!("boxoffice_reserve_coalesced_batch_requests")
            .record(batch.len() as f64);
        let (requests, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
        let handle = handle.clone();
        tokio::spawn(async move {
            match handle.reserve_many(requests).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
