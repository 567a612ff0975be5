//! Answers on their way to a client, bounded in bytes across every connection. An
//! [`AnswerBudget`] is the server-wide allowance (`api.max_answer_buffer_mib`): a stream charges
//! each request it reads before reading it, and gives the charge back once the client has taken
//! the answer; a large unary answer (a seat listing) holds its charge until its body is sent or
//! dropped. An [`AnswerStream`] ends with the status its sender chose and never with OK by
//! default, so a client never sees OK for a stream that left requests unanswered.
//!
//! This module decides nothing about requests; it only carries answers and their charges.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tonic::Status;

/// The server-wide allowance of bytes for answers not yet taken by their clients (and the
/// requests they answer). Cheap to clone.
#[derive(Clone)]
pub struct AnswerBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

/// Bytes of an [`AnswerBudget`] held by one request or answer; given back when dropped.
#[derive(Debug)]
pub struct Charge(Option<OwnedSemaphorePermit>);

impl AnswerBudget {
    pub fn new(bytes: usize) -> AnswerBudget {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        AnswerBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// The whole allowance, bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes charged now.
    pub fn in_use(&self) -> usize {
        self.bytes - self.permits.available_permits()
    }

    /// A charge larger than the whole budget would wait for ever; it takes the whole budget.
    fn units(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.bytes).min(u32::MAX as usize) as u32
    }

    /// Waits until `bytes` are free and takes them.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(self.units(bytes))
            .await
            .expect("the answer budget is never closed");
        Charge(Some(permit))
    }

    /// Takes `bytes` if they are free now.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        self.permits
            .clone()
            .try_acquire_many_owned(self.units(bytes))
            .ok()
            .map(|p| Charge(Some(p)))
    }
}

impl Charge {
    /// Gives back everything above `bytes` (at least one byte stays charged until drop).
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.0 {
            let held = permit.num_permits();
            let keep = bytes.max(1);
            if held > keep {
                drop(permit.split(held - keep));
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

/// Why an answer could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client went away.
    Gone,
    /// The client took no answer for the stall time while answers waited; the stream is being
    /// ended.
    Stalled,
}

struct Shared<T> {
    queue: Mutex<mpsc::Receiver<(T, Charge)>>,
    /// How the stream ends once the queue is empty and every sender is gone. `None` with no
    /// `finished` flag means the senders vanished without saying: that ends with INTERNAL.
    end: Mutex<Option<Status>>,
    finished: AtomicBool,
    /// How long answers may wait with none taken before the stream counts as stalled.
    stall: Duration,
    /// Answers queued and not yet taken or discarded.
    queued: AtomicUsize,
    /// Since when the client has taken nothing while answers waited: the later of the last take
    /// and the moment an answer was queued into an empty queue.
    waiting_since: Mutex<Instant>,
    stalled: AtomicBool,
    stall_noticed: Notify,
}

impl<T> Shared<T> {
    fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
        self.stall_noticed.notify_one();
    }

    /// Drops every waiting answer (and their charges); `close` also refuses later ones.
    fn drop_waiting(&self, close: bool) {
        let mut queue = self.queue.lock().expect("answer queue lock");
        if close {
            queue.close();
        }
        while queue.try_recv().is_ok() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.waiting_since.lock().expect("answer clock lock")
    }
}

/// The sending side; clones share the queue. `finish` is called once, by the owner, after every
/// other clone is dropped.
pub struct AnswerSender<T> {
    tx: mpsc::Sender<(T, Charge)>,
    shared: Arc<Shared<T>>,
}

impl<T> Clone for AnswerSender<T> {
    fn clone(&self) -> Self {
        AnswerSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// The receiving side, as tonic's response stream. Each answer's charge is given back as the
/// answer is taken.
pub struct AnswerStream<T> {
    shared: Arc<Shared<T>>,
    done: bool,
}

/// A queue of at most `capacity` answers, stalled once answers wait `stall` with none taken.
pub fn channel<T>(capacity: usize, stall: Duration) -> (AnswerSender<T>, AnswerStream<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared {
        queue: Mutex::new(rx),
        end: Mutex::new(None),
        finished: AtomicBool::new(false),
        stall,
        queued: AtomicUsize::new(0),
        waiting_since: Mutex::new(Instant::now()),
        stalled: AtomicBool::new(false),
        stall_noticed: Notify::new(),
    });
    (
        AnswerSender {
            tx,
            shared: shared.clone(),
        },
        AnswerStream {
            shared,
            done: false,
        },
    )
}

impl<T> AnswerSender<T> {
    /// Queues an answer, waiting for room at most the stall time. Past that the stream counts as
    /// stalled: this and every later send fail at once, and `stalled()` wakes.
    pub async fn send(&self, answer: T, charge: Charge) -> Result<(), SendError> {
        let shared = &self.shared;
        if shared.stalled.load(Ordering::Relaxed) {
            return Err(SendError::Stalled);
        }
        match tokio::time::timeout(shared.stall, self.tx.reserve()).await {
            Ok(Ok(room)) => {
                // Counted before it can be taken, so that a take never counts below zero.
                if shared.queued.fetch_add(1, Ordering::AcqRel) == 0 {
                    *shared.since() = Instant::now();
                }
                room.send((answer, charge));
                Ok(())
            }
            Ok(Err(_)) => Err(SendError::Gone),
            Err(_) => {
                shared.mark_stalled();
                Err(SendError::Stalled)
            }
        }
    }

    /// Resolves once the stream has stalled: a send found no room for the stall time, or answers
    /// have waited that long with none taken (with room in the queue, while the stream waits for
    /// budget that waiting answers of slow readers hold). One waiter at a time.
    pub async fn stalled(&self) {
        self.wait(false).await;
    }

    /// Resolves `true` once every queued answer has been taken, or `false` once the stream has
    /// stalled (answers waited the stall time with none taken) or the client went away.
    pub async fn drained(&self) -> bool {
        self.wait(true).await
    }

    /// Waits until the stream stalls (`false`) or, if `drain`, until nothing waits (`true`).
    /// Woken by a stalled send, by the last waiting answer taken, and by a tick for the clock.
    async fn wait(&self, drain: bool) -> bool {
        let shared = &self.shared;
        let tick = (shared.stall / 8).clamp(Duration::from_millis(10), Duration::from_millis(500));
        loop {
            if shared.stalled.load(Ordering::Relaxed) {
                return false;
            }
            let queued = shared.queued.load(Ordering::Acquire);
            if drain && queued == 0 {
                return true;
            }
            if queued > 0 && shared.since().elapsed() >= shared.stall {
                shared.mark_stalled();
                return false;
            }
            tokio::select! {
                _ = shared.stall_noticed.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::Relaxed)
    }

    /// Drops every answer still waiting for the client, giving back their charges.
    pub fn discard_waiting(&self) {
        self.shared.drop_waiting(false);
    }

    /// Ends the stream after the answers already queued: with OK, or with `status`.
    pub fn finish(self, end: Result<(), Status>) {
        *self.shared.end.lock().expect("answer end lock") = end.err();
        self.shared.finished.store(true, Ordering::Release);
    }
}

/// The client went away (or tonic dropped the response): the waiting answers and their charges
/// go now, later sends fail at once, and the stream's reader stops.
impl<T> Drop for AnswerStream<T> {
    fn drop(&mut self) {
        self.shared.drop_waiting(true);
        self.shared.mark_stalled();
    }
}

impl<T> futures_util::Stream for AnswerStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self
            .shared
            .queue
            .lock()
            .expect("answer queue lock")
            .poll_recv(cx);
        match polled {
            Poll::Ready(Some((answer, charge))) => {
                drop(charge);
                *self.shared.since() = Instant::now();
                if self.shared.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The last waiting answer: a stream waiting to end can end now.
                    self.shared.stall_noticed.notify_one();
                }
                Poll::Ready(Some(Ok(answer)))
            }
            Poll::Ready(None) => {
                self.done = true;
                let end = self.shared.end.lock().expect("answer end lock").take();
                let finished = self.shared.finished.load(Ordering::Acquire);
                Poll::Ready(match (finished, end) {
                    (true, None) => None,
                    (true, Some(status)) => Some(Err(status)),
                    (false, _) => Some(Err(Status::internal(
                        "the stream ended without a final status; answers may be missing",
                    ))),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A charge that a unary answer carries out of its handler (in the response's extensions) so that
/// it is held until the answer's body is sent or dropped, however slowly the client reads.
#[derive(Clone)]
pub struct HeldCharge(Arc<Mutex<Option<Charge>>>);

impl HeldCharge {
    pub fn new(charge: Charge) -> HeldCharge {
        HeldCharge(Arc::new(Mutex::new(Some(charge))))
    }
}

/// The tower layer that moves a [`HeldCharge`] from a response's extensions into its body.
#[derive(Clone, Copy, Default)]
pub struct ChargedBodies;

impl<S> tower_layer::Layer<S> for ChargedBodies {
    type Service = ChargedBodiesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ChargedBodiesService(inner)
    }
}

#[derive(Clone)]
pub struct ChargedBodiesService<S>(S);

type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, Request> tonic::codegen::Service<Request> for ChargedBodiesService<S>
where
    S: tonic::codegen::Service<Request, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(HttpResponse) -> HttpResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(request).map_ok(attach_charge)
    }
}

fn attach_charge(mut response: HttpResponse) -> HttpResponse {
    let Some(held) = response.extensions_mut().remove::<HeldCharge>() else {
        return response;
    };
    let Some(charge) = held.0.lock().expect("held charge lock").take() else {
        return response;
    };
    response.map(|inner| {
        tonic::body::Body::new(ChargedBody {
            inner,
            _charge: charge,
        })
    })
}

/// A response body that holds its charge until it is dropped: when sent, or when the client
/// went away.
struct ChargedBody {
    inner: tonic::body::Body,
    _charge: Charge,
}

impl http_body::Body for ChargedBody {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn charges_come_back_when_answers_are_taken() {
        let budget = AnswerBudget::new(1_000);
        let (tx, mut rx) = channel::<u32>(4, Duration::from_secs(1));
        let mut charge = budget.charge(600).await;
        assert!(budget.try_charge(500).is_none());
        charge.shrink_to(100);
        assert_eq!(budget.in_use(), 100);
        tx.send(1, charge).await.unwrap();
        assert_eq!(budget.in_use(), 100);
        assert_eq!(rx.next().await.unwrap().unwrap(), 1);
        assert_eq!(budget.in_use(), 0);
        tx.finish(Ok(()));
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_ends_with_the_status_chosen_and_never_ok_by_default() {
        let budget = AnswerBudget::new(1_000);
        let (tx, mut rx) = channel::<u32>(4, Duration::from_secs(1));
        tx.send(7, budget.charge(1).await).await.unwrap();
        tx.finish(Err(Status::invalid_argument("frame 2 is malformed")));
        assert_eq!(rx.next().await.unwrap().unwrap(), 7);
        let end = rx.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::InvalidArgument);
        assert!(rx.next().await.is_none());

        let (tx, mut rx) = channel::<u32>(4, Duration::from_secs(1));
        drop(tx);
        let end = rx.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Internal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_stalls_the_stream() {
        let budget = AnswerBudget::new(1_000);
        let (tx, _rx) = channel::<u32>(1, Duration::from_secs(5));
        tx.send(1, budget.charge(10).await).await.unwrap();
        let second = tx.send(2, budget.charge(10).await).await;
        assert_eq!(second, Err(SendError::Stalled));
        tx.stalled().await;
        assert_eq!(
            tx.send(3, budget.charge(10).await).await,
            Err(SendError::Stalled)
        );
        assert_eq!(budget.in_use(), 10);
        tx.discard_waiting();
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_left_waiting_stall_the_stream_even_with_room_in_the_queue() {
        let budget = AnswerBudget::new(1_000);
        let stall = Duration::from_secs(5);
        let (tx, mut rx) = channel::<u32>(100, stall);
        // Idle with nothing waiting is not a stall, however long.
        tokio::time::sleep(stall * 3).await;
        tx.send(1, budget.charge(10).await).await.unwrap();
        let started = Instant::now();
        // Taking an answer restarts the clock.
        tokio::time::sleep(stall / 2).await;
        tx.send(2, budget.charge(10).await).await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), 1);
        tx.stalled().await;
        assert!(
            started.elapsed() >= stall + stall / 2,
            "{:?}",
            started.elapsed()
        );
        assert!(tx.is_stalled());
        tx.discard_waiting();
        assert_eq!(budget.in_use(), 0);
    }
}
