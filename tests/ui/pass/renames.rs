// rename_all on the enum, rename on variants, the kind and path options, a
// private enum and a `pub(crate)` one.
use push_runtime::{EventKind, push_channel};
use serde::{Deserialize, Serialize};

#[push_channel(path = "/api/v1/jobs", kind = "JobKind")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "SCREAMING_SNAKE_CASE")]
enum JobEvent {
    Started {
        id: u64,
    },
    #[serde(rename = "job:done")]
    Finished(u64),
    HTTPFailed,
}

#[push_channel]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all(serialize = "kebab-case"))]
pub(crate) enum AuditEntry {
    UserCreated { name: String },
}

fn main() {
    assert_eq!(JobKind::NAMES, ["STARTED", "job:done", "H_T_T_P_FAILED"]);
    assert_eq!(AuditEntryKind::NAMES, ["user-created"]);
    let _ = JobEvent::Finished(1);
    let _ = JobEvent::HTTPFailed;
    let _ = JobEvent::Started { id: 1 };
    let _ = AuditEntry::UserCreated {
        name: String::new(),
    };
}
