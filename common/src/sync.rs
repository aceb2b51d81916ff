//! Locks that outlive a panic: a task that panicked while holding a mutex
//! must not take every later caller down with it. The data behind Conclave's
//! mutexes stays consistent at every await-free step, so a poisoned lock is
//! used as it is.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub trait Locked<T> {
    /// Lock, taking the data even when an earlier holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("holder dies");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
