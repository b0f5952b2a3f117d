//! The generated `client.d.ts` type-checks with `tsc` (tests/browser/package.json):
//! a correct program passes, a program misusing the event types fails.
//!
//! Needs `npm ci --prefix tests/browser`. Outside CI (`CI` unset) the test
//! skips with a message when `tsc` is missing; in CI it fails.

use push_runtime::push_channel;
use push_runtime::typescript::TsType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../examples/chat/event.rs"]
mod event;
use event::ChatEvent;

#[derive(Clone, Serialize, Deserialize)]
pub struct Point {
    x: f64,
    y: f64,
}

impl TsType for Point {
    fn ts_type() -> String {
        "{ x: number; y: number }".into()
    }
}

/// Every mapped type and serde's default (external) tagging.
#[push_channel(path = "/shapes")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeEvent {
    Drawn {
        points: Vec<Point>,
        label: Option<String>,
        tags: HashMap<String, bool>,
        counts: BTreeMap<String, u32>,
        #[serde(rename = "z-index")]
        z_index: i16,
    },
    Moved(Point),
    Pair(u8, String),
    Cleared,
}

#[push_channel(path = "/adjacent")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "t", content = "c")]
pub enum Adjacent {
    Say(String),
    Stop,
}

#[push_channel(path = "/untagged")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loose {
    Number(f64),
    Text { text: String },
}

/// What serde may leave out or writes bare: `skip_serializing_if` fields are
/// optional, skipped ones absent, `default` changes nothing serde writes, and
/// a variant-level `untagged` variant is its bare content.
#[push_channel(path = "/alerts")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlertEvent {
    Raised {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        #[serde(default)]
        level: u8,
        #[serde(skip)]
        cache: u64,
        #[serde(skip_serializing)]
        secret: String,
    },
    #[serde(untagged)]
    Raw(String),
}

/// Skipped fields of tuple variants, as serde writes them.
#[push_channel(path = "/tuples")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleEvent {
    Pair(u8, #[serde(skip)] u64),
    Cleared(#[serde(skip)] u64),
    #[serde(untagged)]
    Bare {
        n: u8,
    },
}

const GOOD: &str = r#"
import { subscribe, PATH, NAMES, type ChatEvent, type ChatEventName, type Item } from "./chat/client.js";
import * as shapes from "./shapes/client.js";
import * as adjacent from "./adjacent/client.js";
import * as loose from "./untagged/client.js";

const sub = subscribe("lobby", { transport: "auto", persist: true, events: ["message", "joined"] });
sub.on("message", (data, item) => {
  const from: string = data.from;
  const text: string = data.text;
  const kind: "message" = data.type;
  const cursor: string = item.cursor;
  console.log(from, text, kind, cursor);
});
sub.onEvent((item: Item<"message" | "joined">) => {
  if (item.event === "joined") { const name: string = item.data.name; console.log(name); }
});
sub.onGap((gap) => { const missed: number | null = gap.missed; console.log(missed); });
// Credentials: cookies to another origin, and a provider asked before every
// connect: a header on polls, a short-lived ticket elsewhere.
const ticket = async (): Promise<string> => "t-1";
const withAuth = subscribe("lobby", {
  credentials: "include",
  auth: async ({ transport, reason, status }) => {
    if (reason === "refused" && status === 403) return null;
    if (transport === "poll" || transport === "long-poll") return { headers: { authorization: "Bearer abc" } };
    return { query: { ticket: await ticket() } };
  },
  onStatus: (status, info) => {
    if (status === "closed" && info.error) {
      const why: "connect" | "reconnect" | "expired" | "refused" | "unsupported" = info.error.reason;
      const code: number | undefined = info.error.status;
      console.log(why, code, info.error.message);
    }
  },
});
const sync = subscribe("lobby", { credentials: "omit", auth: () => undefined });
// `auto`: fall back after two failed attempts on a transport that never
// worked, back off 100 ms to 5 s (a poll's `Retry-After` up to a minute),
// and try the better transports every 20 s; a provider may skip an upgrade.
const resilient = subscribe("lobby", {
  fallbackAfter: 2,
  probeInterval: 20000,
  retry: { min: 100, max: 5000, maxRetryAfter: 60000 },
  auth: ({ reason }) => (reason === "upgrade" ? null : {}),
});
const moved: number = resilient.stats.fallbacks + resilient.stats.probes + resilient.stats.upgrades;
console.log(moved);
const failure: { reason: string; message: string } | null = withAuth.error;
console.log(failure, sync.error?.status);
const any: ChatEvent = { type: "left", name: "ann" };
const path: "/chat" = PATH;
const names: readonly ChatEventName[] = NAMES;
console.log(any, sub.stats.requests, sub.transport, sub.cursor, path, names);

shapes.subscribe("t").on("drawn", (data) => {
  const p = data.drawn.points[0];
  const x: number = p.x;
  const label: string | null = data.drawn.label;
  const tag: boolean | undefined = data.drawn.tags["a"];
  const count: number | undefined = data.drawn.counts["b"];
  const z: number = data.drawn["z-index"];
  console.log(x, label, tag, count, z);
}).on("moved", (data) => console.log(data.moved.y))
  .on("pair", (data) => { const [n, s]: [number, string] = data.pair; console.log(n, s); })
  .on("cleared", (data) => { const c: "cleared" = data; console.log(c); });

adjacent.subscribe("t").on("Say", (data) => { const s: string = data.c; const t: "Say" = data.t; console.log(s, t); });
loose.subscribe("t").on("Number", (data) => { const n: number = data; console.log(n); });
loose.subscribe("t").on("Text", (data) => console.log(data.text));

import * as alerts from "./alerts/client.js";
import * as tuples from "./tuples/client.js";
alerts.subscribe("t").on("raised", (data) => {
  const note: string | null | undefined = data.note;
  const tags: string[] = data.tags ?? [];
  const id: number = data.id;
  const level: number = data.level;
  const kind: "raised" = data.type;
  console.log(note?.length, tags, id, level, kind);
}).on("raw", (data) => { const s: string = data; console.log(s); });
tuples.subscribe("t").on("pair", (data) => { const [n]: [number] = data.pair; console.log(n); })
  .on("cleared", (data) => { const c: "cleared" = data; console.log(c); })
  .on("bare", (data) => { const n: number = data.n; console.log(n); });
"#;

/// Programs that treat what serde may leave out as always there, or use what
/// it never writes, each with the error `tsc` must report for it.
const BAD_SERDE: &[(&str, &str)] = &[
    (
        r#"import { subscribe } from "./alerts/client.js"; subscribe("l").on("raised", (d) => { const n: string | null = d.note; });"#,
        "error TS2322: Type 'string | null | undefined' is not assignable to type 'string | null'",
    ),
    (
        r#"import { subscribe } from "./alerts/client.js"; subscribe("l").on("raised", (d) => d.tags.length);"#,
        "error TS18048: 'd.tags' is possibly 'undefined'",
    ),
    (
        r#"import { subscribe } from "./alerts/client.js"; subscribe("l").on("raised", (d) => d.cache);"#,
        "error TS2339: Property 'cache' does not exist",
    ),
    (
        r#"import { subscribe } from "./alerts/client.js"; subscribe("l").on("raised", (d) => d.secret);"#,
        "error TS2339: Property 'secret' does not exist",
    ),
    (
        r#"import { subscribe } from "./alerts/client.js"; subscribe("l").on("raw", (d) => d.type);"#,
        "error TS2339: Property 'type' does not exist on type 'string'",
    ),
    (
        r#"import { subscribe } from "./tuples/client.js"; subscribe("l").on("pair", (d) => { const [a, b]: [number, number] = d.pair; });"#,
        "error TS2322: Type '[number]' is not assignable to type '[number, number]'",
    ),
    (
        r#"import { subscribe } from "./tuples/client.js"; subscribe("l").on("bare", (d) => d.bare);"#,
        "error TS2339: Property 'bare' does not exist",
    ),
];

/// Each line is a mistake `tsc` must report.
const BAD: &[&str] = &[
    r#"import { subscribe } from "./chat/client.js"; subscribe("l").on("message", (d) => d.txt);"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l").on("nope", () => {});"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { transport: "carrier-pigeon" });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { events: ["mesage"] });"#,
    r#"import { subscribe } from "./shapes/client.js"; subscribe("l").on("drawn", (d) => { const s: string = d.drawn.points[0].x; });"#,
    r#"import { subscribe } from "./untagged/client.js"; subscribe("l").on("Number", (d) => { const s: string = d; });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { credentials: "always" });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { auth: () => ({ headers: { authorization: 1 } }) });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { auth: ({ reason }) => (reason === "expird" ? null : {}) });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { auth: async () => "token" });"#,
    r#"import { subscribe } from "./chat/client.js"; const s: string = subscribe("l").error.message;"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { probeInterval: "10s" });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { fallbackAfter: true });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { retry: { maxRetryAfer: 1000 } });"#,
    r#"import { subscribe } from "./chat/client.js"; subscribe("l", { auth: ({ reason }) => (reason === "upgrading" ? null : {}) });"#,
    r#"import { subscribe } from "./chat/client.js"; const n: string = subscribe("l").stats.upgrades;"#,
];

fn tsc() -> Option<PathBuf> {
    let tsc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/.bin/tsc");
    if tsc.exists() {
        return Some(tsc);
    }
    let reason = "tsc is missing: run `npm ci --prefix tests/browser`";
    if std::env::var_os("CI").is_some() {
        panic!("{reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

/// Writes the declarations as a browser would find them, next to each channel's `client.js`.
fn write_project(dir: &Path, program: &str) {
    for (path, text) in [
        ("chat", ChatEvent::typescript()),
        ("shapes", ShapeEvent::typescript()),
        ("adjacent", Adjacent::typescript()),
        ("untagged", Loose::typescript()),
        ("alerts", AlertEvent::typescript()),
        ("tuples", TupleEvent::typescript()),
    ] {
        std::fs::create_dir_all(dir.join(path)).expect("create dir");
        std::fs::write(dir.join(path).join("client.d.ts"), text).expect("write d.ts");
    }
    std::fs::write(dir.join("main.ts"), program).expect("write program");
}

fn check(tsc: &Path, dir: &Path) -> (bool, String) {
    let output = Command::new(tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            "--lib",
            "es2022,dom",
            "main.ts",
        ])
        .current_dir(dir)
        .output()
        .expect("run tsc");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn target_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser/typescript")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn generated_declarations_type_check_a_client_program() {
    let Some(tsc) = tsc() else { return };
    let dir = target_dir("good");
    write_project(&dir, GOOD);
    let (ok, output) = check(&tsc, &dir);
    assert!(
        ok,
        "tsc rejected the program:\n{output}\n{}",
        ChatEvent::typescript()
    );
}

#[test]
fn misuse_of_the_event_types_is_a_type_error() {
    let Some(tsc) = tsc() else { return };
    for (index, program) in BAD.iter().enumerate() {
        let dir = target_dir(&format!("bad{index}"));
        write_project(&dir, program);
        let (ok, output) = check(&tsc, &dir);
        assert!(!ok, "tsc accepted a wrong program: {program}");
        assert!(output.contains("error TS"), "{output}");
    }
}

#[test]
fn what_serde_may_leave_out_is_a_type_error_to_rely_on() {
    let Some(tsc) = tsc() else { return };
    for (index, (program, expected)) in BAD_SERDE.iter().enumerate() {
        let dir = target_dir(&format!("bad_serde{index}"));
        write_project(&dir, program);
        let (ok, output) = check(&tsc, &dir);
        assert!(!ok, "tsc accepted a wrong program: {program}");
        assert!(
            output.contains(expected),
            "expected {expected:?} for {program}, got:\n{output}"
        );
    }
}

#[test]
fn declarations_follow_what_serde_writes() {
    let alerts = AlertEvent::typescript();
    assert!(
        alerts.contains(r#""raised": { "type": "raised"; "id": number; "note"?: string | null; "tags"?: string[]; "level": number };"#),
        "{alerts}"
    );
    assert!(alerts.contains(r#""raw": string;"#), "{alerts}");
    let raised = AlertEvent::Raised {
        id: 1,
        note: None,
        tags: Vec::new(),
        level: 0,
        cache: 0,
        secret: String::new(),
    };
    assert_eq!(
        serde_json::to_string(&raised).expect("json"),
        r#"{"type":"raised","id":1,"level":0}"#
    );
    assert_eq!(
        serde_json::to_string(&AlertEvent::Raw("x".into())).expect("json"),
        r#""x""#
    );
    let tuples = TupleEvent::typescript();
    assert!(
        tuples.contains(r#""pair": { "pair": [number] };"#),
        "{tuples}"
    );
    assert!(tuples.contains(r#""cleared": "cleared";"#), "{tuples}");
    assert!(tuples.contains(r#""bare": { "n": number };"#), "{tuples}");
    for (event, json) in [
        (TupleEvent::Pair(1, 2), r#"{"pair":[1]}"#),
        (TupleEvent::Cleared(3), r#""cleared""#),
        (TupleEvent::Bare { n: 4 }, r#"{"n":4}"#),
    ] {
        assert_eq!(serde_json::to_string(&event).expect("json"), json);
    }
}

#[test]
fn chat_declarations_are_a_union_by_wire_name() {
    let text = ChatEvent::typescript();
    assert!(
        text.contains(r#""message": { "type": "message"; "from": string; "text": string };"#),
        "{text}"
    );
    assert!(
        text.contains(r#""left": { "type": "left"; "name": string };"#),
        "{text}"
    );
    assert!(text.contains("export declare function subscribe"), "{text}");
    let shapes = ShapeEvent::typescript();
    assert!(shapes.contains(r#""cleared": "cleared";"#), "{shapes}");
    assert!(
        shapes.contains(r#""moved": { "moved": { x: number; y: number } };"#),
        "{shapes}"
    );
    assert!(Loose::typescript().contains(r#""Number": number;"#));
}

#[tokio::test]
async fn the_router_serves_the_client_and_its_declarations() {
    let hub = push_runtime::Hub::<ChatEvent>::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, ChatEvent::router::<()>(&hub))
            .await
            .expect("serve");
    });
    let http = reqwest::Client::new();

    let js = http
        .get(format!("http://{addr}/chat/client.js"))
        .send()
        .await
        .expect("client.js");
    assert_eq!(js.status(), 200);
    let header = |name: &str| {
        js.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("access-control-allow-origin"), "*");
    let etag = header("etag");
    let body = js.text().await.expect("body");
    assert!(
        body.contains(r#"export const NAMES = ["message","joined","left"];"#)
            && body.contains(r#"export const PATH = "/chat";"#),
        "the path and wire names are filled in"
    );

    let again = http
        .get(format!("http://{addr}/chat/client.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), 304);

    let dts = http
        .get(format!("http://{addr}/chat/client.d.ts"))
        .send()
        .await
        .expect("client.d.ts");
    assert_eq!(dts.status(), 200);
    assert_eq!(
        dts.headers()["content-type"],
        "application/typescript; charset=utf-8"
    );
    assert_eq!(dts.text().await.expect("body"), ChatEvent::typescript());
    server.abort();
}
