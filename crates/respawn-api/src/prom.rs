//! Reading Prometheus text exposition: sample values and histogram quantiles
//! (computed the way PromQL's `histogram_quantile` does).

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample carries every one of `want`.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses every sample line; comments and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample { name: series.to_owned(), labels: Vec::new(), value });
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample { name: name.to_owned(), labels, value })
}

/// The value of the first sample named `name` carrying all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find(|s| s.name == name && s.has(labels)).map(|s| s.value)
}

/// Sum over every sample named `name` carrying `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.name == name && s.has(labels)).map(|s| s.value).sum()
}

/// A cumulative histogram: `(upper bound, count <= bound)`, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Reads `<name>_bucket` samples carrying `labels` (all zones when empty).
    /// Buckets of matching series are added together.
    pub fn read(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<Self> {
        let bucket_name = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in samples.iter().filter(|s| s.name == bucket_name && s.has(labels)) {
            let le = match s.label("le")? {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(slot) => slot.1 += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (!buckets.is_empty()).then_some(Self { buckets })
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// Observations made after `earlier` was read; all of them when the
    /// count went back (the process restarted in between, its counts anew).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if self.count() < earlier.count() {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = earlier.buckets.iter().find(|(l, _)| l == le).map_or(0.0, |b| b.1);
                (*le, (c - before).max(0.0))
            })
            .collect();
        Histogram { buckets }
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut prev = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let in_bucket = cum - prev.1;
                let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 1.0 };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, cum);
        }
        Some(prev.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP x y
respawn_zone_players{zone="meadow"} 3
respawn_zone_players{zone="caverns"} 2
plain 7
t_bucket{zone="a",le="0.001"} 50
t_bucket{zone="a",le="0.01"} 90
t_bucket{zone="a",le="+Inf"} 100
t_bucket{zone="b",le="0.001"} 0
t_bucket{zone="b",le="0.01"} 0
t_bucket{zone="b",le="+Inf"} 0
odd{msg="a \"quoted\", comma"} 1
"#;

    #[test]
    fn values_and_sums() {
        let s = parse(TEXT);
        assert_eq!(value(&s, "respawn_zone_players", &[("zone", "caverns")]), Some(2.0));
        assert_eq!(sum(&s, "respawn_zone_players", &[]), 5.0);
        assert_eq!(value(&s, "plain", &[]), Some(7.0));
        assert_eq!(value(&s, "odd", &[("msg", "a \"quoted\", comma")]), Some(1.0));
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        let s = parse(TEXT);
        let h = Histogram::read(&s, "t", &[("zone", "a")]).expect("histogram");
        assert_eq!(h.count(), 100.0);
        assert!((h.quantile(0.5).expect("q") - 0.001).abs() < 1e-12);
        let p70 = h.quantile(0.7).expect("q");
        assert!((p70 - 0.0055).abs() < 1e-9, "{p70}");
        assert_eq!(h.quantile(0.99), Some(0.01), "past the last finite bucket: its bound");
        let empty = Histogram::read(&s, "t", &[("zone", "b")]).expect("histogram");
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(h.since(&h).count(), 0.0);
        let restarted = Histogram { buckets: vec![(0.001, 2.0), (f64::INFINITY, 3.0)] };
        assert_eq!(restarted.since(&h), restarted, "a process that restarted: all it counted is new");
        let all = Histogram::read(&s, "t", &[]).expect("histogram");
        assert_eq!(all.count(), 100.0);
    }
}
