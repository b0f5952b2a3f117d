//! Figures an operator scrapes (feature `metrics`): connections by
//! transport, subscriptions, events published and delivered, gaps by cause,
//! bytes written, publish latency, connections cut, authorization refusals
//! and expiries, and the health of the brokers' link to Redis, in the
//! Prometheus text format (version 0.0.4), rendered by `prometheus-client`.
//!
//! Nothing here is global: a [`Metrics`] reads the atomics of the hubs it
//! was given when it is scraped, and only then. The hubs count as they go
//! whether or not anyone scrapes them, at most once per batch a connection
//! takes and once per chunk a socket takes, never once per event delivered.
//!
//! ```
//! # #[push_runtime::push_channel(path = "/chat")]
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! # enum ChatEvent { Joined(String) }
//! use push_runtime::Hub;
//! use push_runtime::metrics::Metrics;
//!
//! let hub = Hub::<ChatEvent>::new();
//! let metrics = Metrics::new().hub(&hub);
//! // `GET /metrics` next to the channel's routes (put it behind whatever
//! // guards the operator's endpoints).
//! let app: axum::Router = axum::Router::new()
//!     .merge(ChatEvent::router(&hub))
//!     .merge(metrics.router());
//! # let _ = app;
//! assert!(metrics.render().contains("push_events_published_total{channel=\"/chat\"} 0"));
//! ```
//!
//! The README's "Metrics" table lists every figure, its type and labels;
//! docs/operations.md says which to alert on.

use crate::broker::{Broker, BrokerHealth};
use crate::channel::Channel;
use crate::history::{DeliveryCounts, GapCause};
use crate::hub::Hub;
use crate::meter::{Meter, Transport};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The content type of the Prometheus text format the scrape answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The figures of some hubs and of their brokers, rendered when scraped.
///
/// Cheap to clone: clones share the same list. Build it once with
/// [`Metrics::hub`] for each hub (each is labelled with its channel's
/// path, `channel="/chat"`), then serve [`Metrics::router`] or call
/// [`Metrics::render`]. Hubs that share a broker share its figures, which
/// are rendered once.
#[derive(Clone, Default)]
pub struct Metrics {
    figures: Arc<Figures>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.figures.fmt(f)
    }
}

#[derive(Default)]
struct Figures {
    hubs: Vec<HubFigures>,
    brokers: Vec<Arc<dyn Broker>>,
}

impl fmt::Debug for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field(
                "channels",
                &self.hubs.iter().map(|hub| hub.channel).collect::<Vec<_>>(),
            )
            .field("brokers", &self.brokers.len())
            .finish()
    }
}

impl Figures {
    fn copy(&self) -> Self {
        Self {
            hubs: self
                .hubs
                .iter()
                .map(|hub| HubFigures {
                    channel: hub.channel,
                    meter: Arc::clone(&hub.meter),
                    deliveries: Arc::clone(&hub.deliveries),
                })
                .collect(),
            brokers: self.brokers.clone(),
        }
    }
}

/// What one hub counts.
struct HubFigures {
    channel: &'static str,
    meter: Arc<Meter>,
    deliveries: Arc<DeliveryCounts>,
}

impl Metrics {
    /// No figures yet: add hubs with [`Metrics::hub`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the figures of `hub`, labelled `channel="<C::PATH>"`, and those
    /// of its broker if no hub added before shares it.
    ///
    /// Two hubs of one channel path would render the same series twice: a
    /// hub whose channel is already here replaces nothing and is not added.
    pub fn hub<C: Channel>(self, hub: &Hub<C>) -> Self {
        // Shared by a clone already: this one gets its own list.
        let mut figures = Arc::try_unwrap(self.figures).unwrap_or_else(|shared| shared.copy());
        if figures.hubs.iter().any(|known| known.channel == C::PATH) {
            tracing::warn!(
                channel = C::PATH,
                "a second hub of this channel is not added to the metrics"
            );
        } else {
            figures.hubs.push(HubFigures {
                channel: C::PATH,
                meter: Arc::clone(hub.meter()),
                deliveries: Arc::clone(hub.deliveries()),
            });
            let broker = hub.broker();
            let known = figures
                .brokers
                .iter()
                .any(|other| std::ptr::addr_eq(Arc::as_ptr(other), Arc::as_ptr(broker)));
            if !known {
                figures.brokers.push(Arc::clone(broker));
            }
        }
        Self {
            figures: Arc::new(figures),
        }
    }

    /// Every figure, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(Arc::clone(&self.figures))));
        let mut text = String::new();
        // Writing to a String cannot fail, nor can the collector.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        {
            tracing::error!(%error, "could not render the metrics");
        }
        text
    }

    /// An axum router answering `GET /metrics` with [`Metrics::render`].
    /// Merge it into the app (behind the operator's own guards if the
    /// figures are not for everyone to see).
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.answer() }
            }),
        )
    }

    fn answer(&self) -> Response {
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            self.render(),
        )
            .into_response()
    }
}

/// The collector one scrape renders.
#[derive(Debug)]
struct Scrape(Arc<Figures>);

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> fmt::Result {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder<'_>, value: u64) -> fmt::Result {
    encoder.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX))
}

impl Scrape {
    /// One family with one series per hub.
    fn per_hub(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&HubFigures) -> u64,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for hub in &self.0.hubs {
            let labels: Labels<1> = [("channel", hub.channel)];
            let mut series = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => counter(&mut series, value(hub))?,
                _ => gauge(&mut series, value(hub))?,
            }
        }
        Ok(())
    }

    /// One family with one series per broker that reports its health.
    fn per_broker(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        healths: &[(String, BrokerHealth)],
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&BrokerHealth) -> u64,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (index, health) in healths {
            let labels: Labels<1> = [("broker", index.as_str())];
            let mut series = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => counter(&mut series, value(health))?,
                _ => gauge(&mut series, value(health))?,
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let figures = &self.0;
        let e = &mut encoder;
        {
            let mut family = e.encode_descriptor(
                "push_connections",
                "Subscriptions open now (streams, WebSockets, polls being answered), by transport.",
                None,
                MetricType::Gauge,
            )?;
            for hub in &figures.hubs {
                for transport in Transport::ALL {
                    let labels: Labels<2> =
                        [("channel", hub.channel), ("transport", transport.name())];
                    let mut series = family.encode_family(&labels)?;
                    gauge(&mut series, hub.meter.connections_on(transport) as u64)?;
                }
            }
        }
        self.per_hub(
            e,
            "push_subscribed_topics",
            "Topics with at least one open subscription now.",
            MetricType::Gauge,
            |hub| hub.meter.topics_read() as u64,
        )?;
        self.per_hub(
            e,
            "push_events_published",
            "Events published through the hub (its publish route included).",
            MetricType::Counter,
            |hub| hub.meter.counters.published.load(Ordering::Relaxed),
        )?;
        self.per_hub(
            e,
            "push_publish_failures",
            "Publishes the broker refused or failed (events not published).",
            MetricType::Counter,
            |hub| hub.meter.counters.publish_failed.load(Ordering::Relaxed),
        )?;
        self.per_hub(
            e,
            "push_publish_backpressure_timeouts",
            "Paced publishes (HubConfig::backpressure) that stopped waiting for subscribers at max_wait.",
            MetricType::Counter,
            |hub| hub.meter.counters.publish_waits_cut.load(Ordering::Relaxed),
        )?;
        {
            let mut family = e.encode_descriptor(
                "push_publish_duration_seconds",
                "Time from handing an encoded event to the broker to its cursor, for successful publishes.",
                None,
                MetricType::Histogram,
            )?;
            for hub in &figures.hubs {
                let labels: Labels<1> = [("channel", hub.channel)];
                let mut series = family.encode_family(&labels)?;
                let (buckets, count, sum) = hub.meter.counters.publish_latency.snapshot();
                series.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        self.per_hub(
            e,
            "push_events_delivered",
            "Events taken from the history for writing to a connection (one per subscriber per event).",
            MetricType::Counter,
            |hub| hub.deliveries.events(),
        )?;
        {
            let mut family = e.encode_descriptor(
                "push_gaps",
                "Gap notices handed to subscribers, by cause.",
                None,
                MetricType::Counter,
            )?;
            for hub in &figures.hubs {
                for cause in GapCause::ALL {
                    let labels: Labels<2> = [("channel", hub.channel), ("cause", cause.name())];
                    let mut series = family.encode_family(&labels)?;
                    counter(&mut series, hub.deliveries.gaps(cause))?;
                }
            }
        }
        self.per_hub(
            e,
            "push_written_bytes",
            "Bytes of responses and WebSocket messages the sockets took.",
            MetricType::Counter,
            |hub| hub.meter.counters.written.load(Ordering::Relaxed),
        )?;
        self.per_hub(
            e,
            "push_buffered_bytes",
            "Bytes handed to connections and not yet written to their sockets.",
            MetricType::Gauge,
            |hub| hub.meter.stats().buffered_bytes as u64,
        )?;
        self.per_hub(
            e,
            "push_held_back_connections",
            "Connections whose writes wait for their socket now (at their buffer limit).",
            MetricType::Gauge,
            |hub| hub.meter.stats().held_back as u64,
        )?;
        self.per_hub(
            e,
            "push_stalled_connections_cut",
            "Connections cut because their peer stopped reading for the stall timeout.",
            MetricType::Counter,
            |hub| hub.meter.stats().stalled_cut,
        )?;
        self.per_hub(
            e,
            "push_refused_at_limit",
            "Subscriptions refused 503 at a connection limit.",
            MetricType::Counter,
            |hub| hub.meter.stats().refused_at_limit,
        )?;
        {
            let mut family = e.encode_descriptor(
                "push_authorization_refusals",
                "Subscriptions refused by the authorization hook (reason=\"hook\") or because their principal had already expired (reason=\"expired\").",
                None,
                MetricType::Counter,
            )?;
            for hub in &figures.hubs {
                let counters = &hub.meter.counters;
                for (reason, value) in [
                    ("hook", counters.unauthorized.load(Ordering::Relaxed)),
                    ("expired", counters.expired_refused.load(Ordering::Relaxed)),
                ] {
                    let labels: Labels<2> = [("channel", hub.channel), ("reason", reason)];
                    let mut series = family.encode_family(&labels)?;
                    counter(&mut series, value)?;
                }
            }
        }
        self.per_hub(
            e,
            "push_authorization_expiries",
            "Connections and held long polls ended when their authorization expired.",
            MetricType::Counter,
            |hub| hub.meter.counters.expired_cut.load(Ordering::Relaxed),
        )?;
        let healths: Vec<(String, BrokerHealth)> = figures
            .brokers
            .iter()
            .filter_map(|broker| broker.health())
            .enumerate()
            .map(|(index, health)| (index.to_string(), health))
            .collect();
        if healths.is_empty() {
            return Ok(());
        }
        self.per_broker(
            e,
            &healths,
            "push_broker_connected",
            "1 while the node's reader is connected to Redis, else 0.",
            MetricType::Gauge,
            |health| u64::from(health.connected),
        )?;
        self.per_broker(
            e,
            &healths,
            "push_broker_reconnects",
            "Times the node's reader reconnected to Redis after losing it.",
            MetricType::Counter,
            |health| health.reconnects,
        )?;
        self.per_broker(
            e,
            &healths,
            "push_broker_reader_lag_events",
            "Events Redis held that this node had not mirrored yet, at its last epoch check (largest of any topic).",
            MetricType::Gauge,
            |health| health.reader_lag,
        )?;
        self.per_broker(
            e,
            &healths,
            "push_broker_mirrored_topics",
            "Topics this node mirrors from Redis now.",
            MetricType::Gauge,
            |health| health.mirrored_topics as u64,
        )
    }
}
