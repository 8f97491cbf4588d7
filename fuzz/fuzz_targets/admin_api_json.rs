//! The admin API's request bodies and query (what a local caller can
//! send): pull and restart specs, metadata updates, pod reports, the
//! change feed's query. Decoding and validation must never panic.
#![no_main]

use keelson_agent::cluster::readiness::PodReport;
use keelson_agent::images::pulls::PullSpec;
use keelson_agent::envdeps::MetadataUpdate;
use keelson_agent::restart::spec::RestartSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<PullSpec>(data) {
        let _ = keelson_agent::images::reference::validate(&spec.image);
        let _ = serde_json::to_vec(&spec);
    }
    if let Ok(spec) = serde_json::from_slice::<RestartSpec>(data) {
        let _ = spec.validate();
    }
    let _ = serde_json::from_slice::<MetadataUpdate>(data);
    let _ = serde_json::from_slice::<PodReport>(data);
    let _ = keelson_agent::admin::changes_query(Some(&String::from_utf8_lossy(data)));
});
