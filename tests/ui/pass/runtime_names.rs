// The generated impls at run time: kinds, wire names, indices, path.
use push_runtime::{Channel, EventKind, push_channel};
use serde::{Deserialize, Serialize};

#[push_channel(path = "/chat")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ChatEvent {
    Message {
        from: String,
        text: String,
    },
    Joined(String),
    #[serde(rename = "user:left")]
    UserLeft,
}

fn main() {
    assert_eq!(ChatEvent::PATH, "/chat");
    assert_eq!(
        ChatEventKind::ALL,
        [
            ChatEventKind::Message,
            ChatEventKind::Joined,
            ChatEventKind::UserLeft
        ]
    );
    assert_eq!(ChatEventKind::NAMES, ["message", "joined", "user:left"]);

    let events = [
        ChatEvent::Message {
            from: "ann".into(),
            text: "hi".into(),
        },
        ChatEvent::Joined("bob".into()),
        ChatEvent::UserLeft,
    ];
    for (index, event) in events.iter().enumerate() {
        let kind = event.kind();
        assert_eq!(kind.index(), index);
        assert_eq!(ChatEventKind::ALL[index], kind);
        assert_eq!(event.event_name(), ChatEventKind::NAMES[index]);
        assert_eq!(ChatEventKind::from_name(kind.name()), Some(kind));
        // The wire name is the very name serde writes.
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(json["type"], kind.name());
    }
    assert_eq!(ChatEventKind::from_name("left"), None);
    assert_eq!(format!("{:?}", ChatEventKind::UserLeft), "UserLeft");
}
