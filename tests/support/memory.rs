//! A state sink that keeps the state in memory, for tests that drive the engine directly.

use std::sync::{Arc, Mutex};

use kz_engine::apply::StateSink;
use kz_state::State;

/// Each save bumps the serial and keeps a copy.
pub struct Memory(pub Arc<Mutex<Option<State>>>);

#[async_trait::async_trait]
impl StateSink for Memory {
    async fn save(&mut self, state: &mut State) -> Result<(), String> {
        state.serial += 1;
        *self.0.lock().map_err(|e| e.to_string())? = Some(state.clone());
        Ok(())
    }
}
