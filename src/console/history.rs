//! The queue depth per peer over the last hour, for the network page's small charts: sampled
//! from the operator view every [`SAMPLE_EVERY`], kept in memory only (a restart starts a new
//! hour), and drawn as an inline SVG (no script, so the CSP is untouched).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use maud::html;
use tokio_util::sync::CancellationToken;

use crate::runtime::context::NodeContext;

/// How often the queues are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Samples of (time, messages waiting) per peer, oldest first.
#[derive(Default)]
pub struct QueueHistory {
    samples: Mutex<HashMap<String, VecDeque<(SystemTime, u32)>>>,
}

impl QueueHistory {
    /// Records one sample per peer at `now`, dropping what is older than the window.
    pub fn record(&self, now: SystemTime, depths: impl IntoIterator<Item = (String, u32)>) {
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (peer, depth) in depths {
            let series = samples.entry(peer).or_default();
            series.push_back((now, depth));
            while series.front().is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() > WINDOW) {
                series.pop_front();
            }
        }
    }

    /// The samples of `peer`.
    pub fn of(&self, peer: &str) -> Vec<(SystemTime, u32)> {
        let samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        samples.get(peer).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

/// Samples the queues until `stop`.
pub async fn sample(context: Arc<NodeContext>, history: Arc<QueueHistory>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A store that cannot be read now leaves a gap in the chart, nothing worse. The queue
        // scan runs off the async workers.
        let scanned = Arc::clone(&context);
        let queues = tokio::task::spawn_blocking(move || crate::desk::operator_view::queue(&scanned)).await;
        if let Ok(Ok(queues)) = queues {
            let depths = queues.into_iter().map(|q| (q.peer, q.flash + q.immediate + q.priority + q.routine));
            history.record(SystemTime::now(), depths);
        }
    }
}

/// A small chart of `samples` over the hour before `now`: a line, a dot on the latest value,
/// and the peak as text. `label` is its accessible name.
pub fn chart(samples: &[(SystemTime, u32)], now: SystemTime, label: &str) -> String {
    const WIDTH: f64 = 240.0;
    const HEIGHT: f64 = 40.0;
    const BASE: f64 = HEIGHT - 2.0;
    let peak = samples.iter().map(|(_, d)| *d).max().unwrap_or(0).max(1);
    let window = WINDOW.as_secs_f64();
    let point = |(at, depth): &(SystemTime, u32)| {
        let ago = now.duration_since(*at).unwrap_or_default().as_secs_f64().min(window);
        let x = WIDTH * (1.0 - ago / window);
        let y = HEIGHT - 2.0 - (HEIGHT - 4.0) * f64::from(*depth) / f64::from(peak);
        (format!("{x:.1}"), format!("{y:.1}"))
    };
    let points = samples.iter().map(point).map(|(x, y)| format!("{x},{y}")).collect::<Vec<_>>().join(" ");
    // maud writes no `/>`, and inside an SVG the HTML parser keeps an element open until its
    // end tag: without `{}` each shape would swallow the next one.
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label)
            preserveAspectRatio="none"
        {
            title { (label) }
            line x1="0" y1=(BASE) x2=(WIDTH) y2=(BASE) stroke="#d0d7de" stroke-width="1" {}
            polyline points=(points) fill="none" stroke="currentColor" stroke-width="1.5" {}
            @if let Some((x, y)) = samples.last().map(point) {
                circle cx=(x) cy=(y) r="2.5" fill="currentColor" {}
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_hour_and_draws_it() {
        let history = QueueHistory::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for minute in 0..90u32 {
            history.record(start + Duration::from_secs(u64::from(minute) * 60), [("FR".to_owned(), minute)]);
        }
        let samples = history.of("FR");
        assert_eq!(samples.len(), 61, "the last hour only, both ends included");
        assert_eq!(samples[0].1, 29);
        assert!(history.of("DE").is_empty());
        let now = start + Duration::from_secs(89 * 60);
        let svg = chart(&samples, now, "queue of FR");
        assert!(svg.contains("points=\"0.0,"), "the oldest sample at the left edge: {svg}");
        assert!(svg.contains("cx=\"240.0\" cy=\"2.0\""), "the latest, the peak, at the top right: {svg}");
        assert!(chart(&[], now, "empty").contains("points=\"\""));
    }
}
