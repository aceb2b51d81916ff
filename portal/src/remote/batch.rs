//! Calls that go out one batch at a time. The first caller sends its item
//! at once; callers that come while that call is on its way queue, and when
//! it is answered one of them sends everything queued in one call, and so
//! on. One at a time the calls are what they were; under load they group
//! themselves, each batch as large as what arrived during the previous
//! round trip, and each costs both sides one call's CPU instead of one per
//! item. No task of its own: a caller does the sending in its own turn.

use conclave_common::sync::Locked;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What a queued caller is told: its answer, or that it sends the next
/// batch (its own item first).
enum Turn<I, O> {
    Answer(O),
    Send(I),
}

struct Queue<I, O> {
    waiting: VecDeque<(I, oneshot::Sender<Turn<I, O>>)>,
    /// A caller is sending a batch and hands the turn on when it is answered.
    sending: bool,
}

pub(crate) struct Batches<I, O> {
    queue: Mutex<Queue<I, O>>,
    /// The answer of a caller whose batch was lost (its sender went away
    /// before the answer; a login whose socket closed, say).
    lost: fn() -> O,
    /// How long the caller whose turn it is waits for others before it
    /// sends (zero: it sends at once).
    gather: std::time::Duration,
}

impl<I, O> Batches<I, O> {
    pub(crate) fn new(lost: fn() -> O) -> Self {
        Batches {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                sending: false,
            }),
            lost,
            gather: std::time::Duration::ZERO,
        }
    }

    /// Batches whose sender waits `gather` for others to join its batch
    /// before it sends: for calls whose caller does not wait on the answer
    /// to go on (a login's confirmation, which its login does not wait for).
    pub(crate) fn gathering(lost: fn() -> O, gather: std::time::Duration) -> Self {
        Batches {
            gather,
            ..Batches::new(lost)
        }
    }

    /// `item`'s answer. `send` gets a batch, `item` or another caller's
    /// first, and answers each of its items in order.
    pub(crate) async fn call<F, Fut>(&self, item: I, send: F) -> O
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<O>>,
    {
        let queued = {
            let mut queue = self.queue.locked();
            if queue.sending {
                let (tx, rx) = oneshot::channel();
                queue.waiting.push_back((item, tx));
                Err(rx)
            } else {
                queue.sending = true;
                Ok(item)
            }
        };
        let item = match queued {
            Ok(item) => item,
            Err(rx) => {
                let mut waiting = Waiting {
                    rx: Some(rx),
                    owner: self,
                };
                let turn = waiting.rx.as_mut().expect("set above").await;
                waiting.rx = None;
                match turn {
                    Ok(Turn::Answer(answer)) => return answer,
                    Ok(Turn::Send(item)) => item,
                    Err(_) => return (self.lost)(),
                }
            }
        };
        // this caller's turn: whatever happens to it, the next one's comes
        let _turn = HandOver(self);
        if !self.gather.is_zero() {
            tokio::time::sleep(self.gather).await;
        }
        let others: Vec<_> = self.queue.locked().waiting.drain(..).collect();
        let mut items = Vec::with_capacity(1 + others.len());
        items.push(item);
        let mut answers_to = Vec::with_capacity(others.len());
        for (item, tx) in others {
            items.push(item);
            answers_to.push(tx);
        }
        let mut answers = send(items).await.into_iter();
        let mine = answers.next().unwrap_or_else(self.lost);
        for (tx, answer) in answers_to.into_iter().zip(answers) {
            let _ = tx.send(Turn::Answer(answer));
        }
        mine
    }

    /// The turn passes to the first caller still waiting, or ends.
    fn hand_over(&self) {
        let mut queue = self.queue.locked();
        while let Some((item, tx)) = queue.waiting.pop_front() {
            if tx.send(Turn::Send(item)).is_ok() {
                return;
            }
        }
        queue.sending = false;
    }
}

/// Hands the turn on when the caller that holds it is done, or dropped.
struct HandOver<'a, I, O>(&'a Batches<I, O>);

impl<I, O> Drop for HandOver<'_, I, O> {
    fn drop(&mut self) {
        self.0.hand_over();
    }
}

/// A queued caller; dropped after being given the turn but before taking
/// it, it hands the turn on.
struct Waiting<'a, I, O> {
    rx: Option<oneshot::Receiver<Turn<I, O>>>,
    owner: &'a Batches<I, O>,
}

impl<I, O> Drop for Waiting<'_, I, O> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Turn::Send(_)) = rx.try_recv() {
                self.owner.hand_over();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Notify;

    type Log = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A send that records its batch and, for a batch holding `hold`,
    /// waits for `gate`; answers are the items times ten.
    fn sender(
        log: Log,
        gate: Arc<Notify>,
        hold: Option<u32>,
    ) -> impl FnOnce(Vec<u32>) -> std::pin::Pin<Box<dyn Future<Output = Vec<u32>> + Send>> {
        move |batch: Vec<u32>| {
            Box::pin(async move {
                log.locked().push(batch.clone());
                if hold.is_some_and(|h| batch.contains(&h)) {
                    gate.notified().await;
                }
                batch.iter().map(|i| i * 10).collect()
            })
        }
    }

    fn lost() -> u32 {
        u32::MAX
    }

    /// Yield until `done` holds (the other tasks run meanwhile).
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::task::yield_now().await;
        }
    }

    /// A caller of `item` on a task of its own.
    fn spawn_call(
        b: &Arc<Batches<u32, u32>>,
        log: &Log,
        gate: &Arc<Notify>,
        item: u32,
        hold: Option<u32>,
    ) -> tokio::task::JoinHandle<u32> {
        let (b, log, gate) = (b.clone(), log.clone(), gate.clone());
        tokio::spawn(async move { b.call(item, sender(log, gate, hold)).await })
    }

    #[tokio::test]
    async fn one_at_a_time_each_call_is_its_own_batch() {
        let b = Batches::new(lost);
        let log = Log::default();
        let gate = Arc::new(Notify::new());
        for i in 0..3 {
            assert_eq!(
                b.call(i, sender(log.clone(), gate.clone(), None)).await,
                i * 10
            );
        }
        assert_eq!(*log.locked(), vec![vec![0], vec![1], vec![2]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gathering_sender_waits_for_the_others_of_its_window() {
        let b = Arc::new(Batches::gathering(
            lost,
            std::time::Duration::from_millis(10),
        ));
        let log = Log::default();
        let gate = Arc::new(Notify::new());
        let first = spawn_call(&b, &log, &gate, 1, None);
        tokio::time::sleep(std::time::Duration::from_millis(4)).await;
        assert!(log.locked().is_empty(), "nothing sent within the window");
        let second = spawn_call(&b, &log, &gate, 2, None);
        let third = spawn_call(&b, &log, &gate, 3, None);
        assert_eq!(
            (
                first.await.unwrap(),
                second.await.unwrap(),
                third.await.unwrap()
            ),
            (10, 20, 30)
        );
        assert_eq!(*log.locked(), vec![vec![1, 2, 3]]);
        // a caller dropped during its window hands the turn on
        let dropped = spawn_call(&b, &log, &gate, 4, None);
        tokio::task::yield_now().await;
        let fifth = spawn_call(&b, &log, &gate, 5, None);
        tokio::task::yield_now().await;
        dropped.abort();
        assert_eq!(fifth.await.unwrap(), 50);
        assert_eq!(log.locked().last().unwrap(), &vec![5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_during_a_call_go_together_in_the_next_and_get_their_own_answers() {
        let b = Arc::new(Batches::new(lost));
        let log = Log::default();
        let gate = Arc::new(Notify::new());
        let first = spawn_call(&b, &log, &gate, 0, Some(0));
        until(|| !log.locked().is_empty()).await;
        let rest: Vec<_> = (1..=10)
            .map(|i| spawn_call(&b, &log, &gate, i, None))
            .collect();
        until(|| b.queue.locked().waiting.len() >= 10).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap(), 0);
        for (i, r) in rest.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), (i as u32 + 1) * 10);
        }
        let log = log.locked().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        let mut second = log[1].clone();
        second.sort();
        assert_eq!(second, (1..=10).collect::<Vec<_>>());
        assert!(!b.queue.locked().sending);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_that_goes_away_passes_the_turn_on() {
        let b = Arc::new(Batches::new(lost));
        let log = Log::default();
        let gate = Arc::new(Notify::new());
        let first = spawn_call(&b, &log, &gate, 0, Some(0));
        until(|| !log.locked().is_empty()).await;
        let second = spawn_call(&b, &log, &gate, 1, None);
        until(|| !b.queue.locked().waiting.is_empty()).await;
        first.abort();
        assert_eq!(
            second.await.unwrap(),
            10,
            "the waiting caller sends its own"
        );
        assert_eq!(b.call(2, sender(log.clone(), gate, None)).await, 20);
        assert!(!b.queue.locked().sending);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_gone_before_its_turn_does_not_stop_the_others() {
        let b = Arc::new(Batches::new(lost));
        let log = Log::default();
        let gate = Arc::new(Notify::new());
        let first = spawn_call(&b, &log, &gate, 0, Some(0));
        until(|| !log.locked().is_empty()).await;
        // queued first, then gone: the turn it would get goes to the next
        let gone = spawn_call(&b, &log, &gate, 1, None);
        until(|| !b.queue.locked().waiting.is_empty()).await;
        gone.abort();
        let _ = gone.await;
        let next = spawn_call(&b, &log, &gate, 2, None);
        until(|| b.queue.locked().waiting.len() >= 2).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(next.await.unwrap(), 20);
        assert!(!b.queue.locked().sending);
    }
}
