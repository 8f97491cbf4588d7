//! Where the proxy finds its hooks: given when it is built, or installed
//! once while it already serves.
//!
//! The features behind the hooks need the agent's state (the pod book,
//! the journals), and opening and loading it takes longer than everything
//! else in the agent's start. So the agent serves first: a call on a
//! method no feature will hook is forwarded at once, as it would be later,
//! and a call on a method that will be hooked is *held* until the hooks
//! are installed, then runs through them. Which methods are held is
//! declared when the slot is made; [`HookSlot::install`] reports any
//! method the hooks take that was not declared, so the list cannot drift
//! unnoticed.

use std::sync::OnceLock;

use tokio::sync::Notify;

use super::hook::{Chain, HookSet};

/// The proxy's hooks, now or once installed.
pub(crate) struct HookSlot {
    state: OnceLock<Installed>,
    /// Methods held until the hooks are installed.
    held: Box<[&'static str]>,
    installed: Notify,
}

enum Installed {
    Hooks(HookSet),
    /// The features did not start; held calls are answered with this.
    Failed(String),
}

/// What a call on a method finds.
pub(crate) enum Lookup<'a> {
    /// Hooks are installed and some engaged hook wants the method.
    Hooked(&'a HookSet, &'a Chain),
    /// Forward it without hooks.
    Opaque,
    /// Hooks are not installed yet and will want the method: wait
    /// ([`HookSlot::wait`]).
    Held,
}

/// [`HookSlot::install`] was called on a slot that already has its hooks
/// (or its failure).
#[derive(Debug, thiserror::Error)]
#[error("the proxy's hooks are already installed")]
pub struct AlreadyInstalled;

impl HookSlot {
    /// A slot holding `hooks` from the start.
    pub(crate) fn ready(hooks: HookSet) -> Self {
        let state = OnceLock::new();
        let _ = state.set(Installed::Hooks(hooks));
        Self {
            state,
            held: Box::new([]),
            installed: Notify::new(),
        }
    }

    /// A slot whose hooks come later, holding calls on `held` until then.
    pub(crate) fn pending(held: &[&'static str]) -> Self {
        Self {
            state: OnceLock::new(),
            held: held.into(),
            installed: Notify::new(),
        }
    }

    /// What a call on `method` should do now.
    pub(crate) fn lookup(&self, method: &str) -> Lookup<'_> {
        match self.state.get() {
            Some(Installed::Hooks(set)) => match set.chain(method) {
                Some(chain) => Lookup::Hooked(set, chain),
                None => Lookup::Opaque,
            },
            // Not installed (yet, or ever: held calls learn of a failure
            // in `wait`).
            _ if self.held.contains(&method) => Lookup::Held,
            _ => Lookup::Opaque,
        }
    }

    /// Waits until the hooks are installed; `Err` says why they never
    /// will be.
    pub(crate) async fn wait(&self) -> Result<&HookSet, &str> {
        loop {
            let notified = self.installed.notified();
            tokio::pin!(notified);
            // Registered before looking, so an install in between is seen.
            notified.as_mut().enable();
            match self.state.get() {
                Some(Installed::Hooks(set)) => return Ok(set),
                Some(Installed::Failed(why)) => return Err(why),
                None => notified.await,
            }
        }
    }

    /// Installs `hooks` and releases the held calls. Returns the methods
    /// the hooks take that were not held (calls on them before now went
    /// without hooks); empty when the held list was right.
    pub(crate) fn install(&self, hooks: HookSet) -> Result<Vec<String>, AlreadyInstalled> {
        let unheld: Vec<String> = hooks
            .methods()
            .filter(|m| !self.held.contains(m))
            .map(str::to_string)
            .collect();
        self.state
            .set(Installed::Hooks(hooks))
            .map_err(|_| AlreadyInstalled)?;
        self.installed.notify_waiters();
        Ok(unheld)
    }

    /// Records that the hooks will never come: held calls, now and later,
    /// are answered UNAVAILABLE with `why`.
    pub(crate) fn fail(&self, why: String) -> Result<(), AlreadyInstalled> {
        self.state
            .set(Installed::Failed(why))
            .map_err(|_| AlreadyInstalled)?;
        self.installed.notify_waiters();
        Ok(())
    }

    /// The hooks, once installed.
    pub(crate) fn hooks(&self) -> Option<&HookSet> {
        match self.state.get() {
            Some(Installed::Hooks(set)) => Some(set),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hook::{Hook, Interest};

    struct Takes(&'static str);

    impl Hook for Takes {
        fn name(&self) -> &str {
            "takes"
        }
        fn interest(&self) -> Interest {
            Interest {
                before: vec![self.0],
                after: vec![],
            }
        }
    }

    fn set_taking(method: &'static str) -> HookSet {
        let mut set = HookSet::new();
        set.register(Arc::new(Takes(method)));
        set
    }

    #[tokio::test(flavor = "current_thread")]
    async fn held_methods_wait_for_the_install_and_others_pass_at_once() {
        let slot = Arc::new(HookSlot::pending(&["/svc/Hooked"]));
        assert!(matches!(slot.lookup("/svc/Other"), Lookup::Opaque));
        assert!(matches!(slot.lookup("/svc/Hooked"), Lookup::Held));
        assert!(slot.hooks().is_none());

        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move {
                slot.wait()
                    .await
                    .map(|set| set.methods().count())
                    .map_err(str::to_string)
            }
        });
        // The waiter is parked before the install.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());

        let unheld = slot.install(set_taking("/svc/Hooked")).unwrap();
        assert!(unheld.is_empty(), "{unheld:?}");
        assert_eq!(waiting.await.unwrap(), Ok(1));
        assert!(matches!(slot.lookup("/svc/Hooked"), Lookup::Hooked(..)));
        assert!(matches!(slot.lookup("/svc/Other"), Lookup::Opaque));
        assert!(slot.install(HookSet::new()).is_err(), "only once");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_start_answers_the_held_calls() {
        let slot = HookSlot::pending(&["/svc/Hooked"]);
        slot.fail("state dir locked".into()).unwrap();
        assert!(matches!(slot.lookup("/svc/Hooked"), Lookup::Held));
        assert_eq!(slot.wait().await.err(), Some("state dir locked"));
        assert!(matches!(slot.lookup("/svc/Other"), Lookup::Opaque));
    }

    #[test]
    fn methods_hooked_but_not_held_are_reported() {
        let slot = HookSlot::pending(&["/svc/A"]);
        let unheld = slot.install(set_taking("/svc/B")).unwrap();
        assert_eq!(unheld, ["/svc/B"]);
    }

    #[test]
    fn a_ready_slot_holds_nothing() {
        let slot = HookSlot::ready(set_taking("/svc/A"));
        assert!(matches!(slot.lookup("/svc/A"), Lookup::Hooked(..)));
        assert!(matches!(slot.lookup("/svc/B"), Lookup::Opaque));
        assert!(slot.hooks().is_some());
    }
}
