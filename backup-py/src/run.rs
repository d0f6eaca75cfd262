//! Running engine work from Python: on a worker thread, with the GIL released,
//! progress delivered on the calling thread, and Ctrl-C turned into a clean
//! cancellation.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use backup_core::{Cancel, Event, NoProgress, Progress};
use pyo3::prelude::*;

use crate::convert::json_to_py;
use crate::errors;

/// How long the calling thread waits (GIL released) between looks at
/// signals: the latency of Ctrl-C.
const POLL: Duration = Duration::from_millis(50);
/// Events queued for the callback; a full queue makes the worker wait.
const QUEUE: usize = 1024;
/// Events handed to the callback per wake-up before signals are looked at.
const BATCH: usize = 256;

/// Hands engine progress events to a forwarding function.
struct Forward<'f>(&'f (dyn Fn(Event) + Sync));

impl Progress for Forward<'_> {
    fn event(&self, event: &Event) {
        (self.0)(event.clone());
    }
}

/// Runs `work` on a new thread and waits for it with the GIL released.
///
/// Events go to `progress` (a callable taking one dict) on this thread. A
/// signal handler's exception (`KeyboardInterrupt` on Ctrl-C) or the
/// callback's exception cancels the work; once the worker has cleaned up,
/// that exception is raised. Core errors become backupkit exceptions.
pub(crate) fn run<T, F>(py: Python<'_>, progress: Option<&Bound<'_, PyAny>>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&dyn Progress, &Cancel) -> backup_core::Result<T> + Send,
{
    let wants = progress.is_some();
    run_events::<Event, T, _>(py, progress, move |send, cancel| {
        let forward = Forward(send);
        let sink: &dyn Progress = if wants { &forward } else { &NoProgress };
        work(sink, cancel)
    })
}

/// [`run`] for work that reports events of its own kind `E` through the
/// function it is given (each becomes a dict for the callback).
pub(crate) fn run_events<E, T, F>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: F,
) -> PyResult<T>
where
    E: serde::Serialize + Send,
    T: Send,
    F: FnOnce(&(dyn Fn(E) + Sync), &Cancel) -> backup_core::Result<T> + Send,
{
    let cancel = Cancel::new();
    let (tx, rx) = mpsc::sync_channel::<E>(QUEUE);
    // `Receiver` is not `Sync`; the mutex lets the GIL-free wait borrow it.
    let rx = Mutex::new(rx);
    let wants_events = progress.is_some();
    std::thread::scope(|s| {
        let worker = {
            let cancel = cancel.clone();
            s.spawn(move || {
                // The sender lives exactly as long as the work: its drop is
                // the "finished" signal, with or without events. A send fails
                // only if the calling thread is unwinding, when events no
                // longer matter.
                let send = move |event: E| {
                    if wants_events {
                        let _ = tx.send(event);
                    }
                };
                work(&send, &cancel)
            })
        };

        // The first exception raised on this thread; once set, the work is
        // cancelled and events are dropped.
        let mut raised: Option<PyErr> = None;
        loop {
            let batch = py.detach(|| next_batch(&rx));
            let Some(events) = batch else { break };
            for event in &events {
                if raised.is_some() {
                    break;
                }
                if let Some(callback) = progress
                    && let Err(e) = deliver(py, callback, event)
                {
                    cancel.cancel();
                    raised = Some(e);
                }
            }
            if raised.is_none()
                && let Err(e) = py.check_signals()
            {
                cancel.cancel();
                raised = Some(e);
            }
        }

        let result = match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match raised {
            Some(e) => Err(e),
            None => result.map_err(|e| errors::to_py(&e)),
        }
    })
}

/// Waits up to [`POLL`] for events; `None` once the worker has finished and
/// every event was taken.
fn next_batch<E>(rx: &Mutex<Receiver<E>>) -> Option<Vec<E>> {
    let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut events = Vec::new();
    match rx.recv_timeout(POLL) {
        Ok(event) => events.push(event),
        Err(RecvTimeoutError::Timeout) => return Some(events),
        Err(RecvTimeoutError::Disconnected) => return None,
    }
    while events.len() < BATCH {
        match rx.try_recv() {
            Ok(event) => events.push(event),
            Err(_) => break,
        }
    }
    Some(events)
}

/// Calls the progress callback with the event as a dict.
fn deliver<E: serde::Serialize>(
    py: Python<'_>,
    callback: &Bound<'_, PyAny>,
    event: &E,
) -> PyResult<()> {
    let value = serde_json::to_value(event).expect("events serialize");
    callback.call1((json_to_py(py, &value)?,))?;
    Ok(())
}
