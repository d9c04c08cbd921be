//! Container logs as `kubectl logs` reads them: the CRI log file
//! (`<RFC3339Nano> <stdout|stderr> <P|F> <content>` per line, `P` marking a line the runtime
//! split) turned back into the container's output, with upstream's options — `tailLines`,
//! `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes` and `follow` (which keeps reading
//! as the container writes, across a rotation of the file, until the container stops).

use jiff::Timestamp;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

/// The options of one log request (the query of `/containerLogs/…`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops.
    pub follow: bool,
    /// Only the last N lines of the file.
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with the time the runtime logged it.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// The previous (terminated) instance of the container.
    pub previous: bool,
}

impl LogOptions {
    /// Parses a query string as the kubelet's `/containerLogs` handler does; `now` anchors
    /// `sinceSeconds`. A malformed value is an error naming the parameter.
    pub fn from_query(query: &str, now: Timestamp) -> Result<Self, String> {
        let mut o = LogOptions::default();
        let flag = |k: &str, v: &str| -> Result<bool, String> {
            match v {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{k}: {v:?} is not a boolean")),
            }
        };
        let number = |k: &str, v: &str| -> Result<i64, String> {
            v.parse::<i64>()
                .map_err(|_| format!("{k}: {v:?} is not an integer"))
        };
        for (k, v) in form_pairs(query) {
            match k.as_str() {
                "follow" => o.follow = flag(&k, &v)?,
                "timestamps" => o.timestamps = flag(&k, &v)?,
                "previous" => o.previous = flag(&k, &v)?,
                "tailLines" => {
                    let n = number(&k, &v)?;
                    if n < 0 {
                        return Err("tailLines: must be greater than or equal to 0".into());
                    }
                    o.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = number(&k, &v)?;
                    if n < 1 {
                        return Err("limitBytes: must be greater than 0".into());
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = number(&k, &v)?;
                    if n < 1 {
                        return Err("sinceSeconds: must be greater than 0".into());
                    }
                    o.since = Some(
                        now.checked_sub(jiff::SignedDuration::from_secs(n))
                            .unwrap_or(Timestamp::MIN),
                    );
                }
                "sinceTime" => {
                    o.since = Some(
                        v.parse::<Timestamp>()
                            .map_err(|e| format!("sinceTime: {v:?}: {e}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// The `key=value` pairs of a query string, percent-decoded.
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The time as written (RFC 3339 with nanoseconds).
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether the runtime split this line (more of it follows).
    pub partial: bool,
    /// The output, without the newline.
    pub content: &'a [u8],
}

/// Parses one line (without its newline); `None` for a line not in the CRI format.
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(&[]);
    let partial = tag.split(|b| *b == b':').any(|t| t == b"P");
    Some(LogLine {
        time,
        stream,
        partial,
        content,
    })
}

/// Turns log-file lines into the bytes `kubectl logs` prints, applying `since`,
/// `timestamps` and `limitBytes`.
#[derive(Debug)]
pub struct Formatter {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    /// Whether the previous line was partial (its continuation gets no timestamp).
    continuing: bool,
}

impl Formatter {
    /// A formatter for `opts`.
    pub fn new(opts: &LogOptions) -> Self {
        Formatter {
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
            continuing: false,
        }
    }

    /// Whether `limitBytes` is used up.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The output for one log-file line (empty when it is filtered out).
    pub fn line(&mut self, raw: &[u8]) -> Vec<u8> {
        let Some(l) = parse_line(raw) else {
            return Vec::new();
        };
        let prefix = !self.continuing;
        self.continuing = l.partial;
        if let (Some(since), Ok(t)) = (self.since, l.time.parse::<Timestamp>()) {
            if t < since {
                return Vec::new();
            }
        }
        let mut out = Vec::with_capacity(l.content.len() + 40);
        if self.timestamps && prefix {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.content);
        if !l.partial {
            out.push(b'\n');
        }
        if let Some(rem) = self.remaining.as_mut() {
            let n = (out.len() as u64).min(*rem);
            out.truncate(n as usize);
            *rem -= n;
        }
        out
    }
}

/// Where the last `n` lines of a file start.
pub async fn tail_offset(file: &mut tokio::fs::File, n: u64) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut seen = 0u64;
    let mut buf = vec![0u8; 32 * 1024];
    // A final newline ends the last line; it does not start another.
    let mut skip_last = true;
    while pos > 0 {
        let chunk = (buf.len() as u64).min(pos);
        pos -= chunk;
        file.seek(std::io::SeekFrom::Start(pos)).await?;
        file.read_exact(&mut buf[..chunk as usize]).await?;
        for i in (0..chunk as usize).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            if skip_last && pos + i as u64 == len - 1 {
                skip_last = false;
                continue;
            }
            seen += 1;
            if seen == n {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

/// Whether the container is still writing (follow keeps going while it is).
pub trait Liveness: Send {
    /// True while the container runs.
    fn running(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

/// Streams the log at `path` with `opts` into `out` until done (or, following, until the
/// container stops and everything it wrote is sent). Returns early when `out` closes.
pub async fn stream(
    path: PathBuf,
    opts: LogOptions,
    mut live: impl Liveness,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> std::io::Result<()> {
    let mut fmt = Formatter::new(&opts);
    let mut file = tokio::fs::File::open(&path).await?;
    if let Some(n) = opts.tail_lines {
        let at = tail_offset(&mut file, n).await?;
        file.seek(std::io::SeekFrom::Start(at)).await?;
    } else {
        file.seek(std::io::SeekFrom::Start(0)).await?;
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut last_check = std::time::Instant::now();
    let mut stopped = false;
    loop {
        let n = reader.read_until(b'\n', &mut line).await?;
        if n > 0 && line.ends_with(b"\n") {
            line.pop();
            let bytes = fmt.line(&line);
            line.clear();
            if !bytes.is_empty() && out.send(bytes).await.is_err() {
                return Ok(());
            }
            if fmt.done() {
                return Ok(());
            }
            continue;
        }
        // End of what is written so far (`line` may hold the start of an unfinished line).
        if !opts.follow || stopped {
            return Ok(());
        }
        if rotated(&path, reader.get_ref()).await {
            // Finish the old file (nothing more is written to it), then go on in the new one.
            tracing::debug!(path = %path.display(), "log rotated; reopening");
            match tokio::fs::File::open(&path).await {
                Ok(f) => {
                    reader = BufReader::with_capacity(64 * 1024, f);
                    line.clear();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = std::time::Instant::now();
            if !live.running().await {
                // One more read picks up what it wrote last.
                stopped = true;
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = out.closed() => return Ok(()),
        }
    }
}

/// Whether `path` now names a different file than the one open.
async fn rotated(path: &Path, open: &tokio::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(now), Ok(mine)) = (tokio::fs::metadata(path).await, open.metadata().await) else {
        return false;
    };
    now.ino() != mine.ino() || now.dev() != mine.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000001Z stdout F one\n\
                       2026-01-01T00:00:02.000000000Z stderr F two\n\
                       2026-01-01T00:00:03.000000000Z stdout P thr\n\
                       2026-01-01T00:00:03.500000000Z stdout F ee\n\
                       2026-01-01T00:00:04.000000000Z stdout F \n";

    fn render(opts: &LogOptions, text: &str) -> String {
        let mut f = Formatter::new(opts);
        let mut out = Vec::new();
        for l in text.lines() {
            out.extend(f.line(l.as_bytes()));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_cri_lines() {
        let l = parse_line(b"2026-01-01T00:00:01Z stderr P a b c").unwrap();
        assert_eq!(l.stream, "stderr");
        assert!(l.partial);
        assert_eq!(l.content, b"a b c");
        assert_eq!(parse_line(b"2026 stdout F").unwrap().content, b"");
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"t nope F x").is_none());
    }

    #[test]
    fn formats_like_the_kubelet() {
        let all = LogOptions::default();
        assert_eq!(render(&all, LOG), "one\ntwo\nthree\n\n");
        let ts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(&ts, LOG),
            "2026-01-01T00:00:01.000000001Z one\n2026-01-01T00:00:02.000000000Z two\n\
             2026-01-01T00:00:03.000000000Z three\n2026-01-01T00:00:04.000000000Z \n"
        );
        let since = LogOptions {
            since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(render(&since, LOG), "two\nthree\n\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(&limit, LOG), "one\ntw");
    }

    #[test]
    fn reads_the_query() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let o = LogOptions::from_query(
            "follow=true&tailLines=10&timestamps=1&limitBytes=5&sinceSeconds=60&previous=false",
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.limit_bytes, Some(5));
        assert_eq!(o.since, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        let o = LogOptions::from_query("sinceTime=2026-01-01T00%3A00%3A30Z", now).unwrap();
        assert_eq!(o.since, Some("2026-01-01T00:00:30Z".parse().unwrap()));
        for bad in [
            "tailLines=x",
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceTime=yesterday",
            "follow=maybe",
        ] {
            assert!(LogOptions::from_query(bad, now).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn tails_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, LOG).unwrap();
        let mut f = tokio::fs::File::open(&p).await.unwrap();
        let len = LOG.len() as u64;
        assert_eq!(tail_offset(&mut f, 0).await.unwrap(), len);
        let one = tail_offset(&mut f, 1).await.unwrap();
        assert_eq!(
            &LOG[one as usize..],
            "2026-01-01T00:00:04.000000000Z stdout F \n"
        );
        assert_eq!(tail_offset(&mut f, 5).await.unwrap(), 0);
        assert_eq!(tail_offset(&mut f, 50).await.unwrap(), 0);
    }

    struct Stops(u32);
    impl Liveness for Stops {
        async fn running(&mut self) -> bool {
            self.0 = self.0.saturating_sub(1);
            self.0 > 0
        }
    }

    #[tokio::test]
    async fn follows_appends_and_rotation_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "2026-01-01T00:00:01Z stdout F first\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(stream(p.clone(), opts, Stops(6), tx));
        assert_eq!(rx.recv().await.unwrap(), b"first\n");
        // An append, written in two pieces.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(b"2026-01-01T00:00:02Z stdout F sec").unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            f.write_all(b"ond\n").unwrap();
        }
        assert_eq!(rx.recv().await.unwrap(), b"second\n");
        // Rotation: the old file moves away, a new one takes its name.
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&p, "2026-01-01T00:00:03Z stdout F third\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"third\n");
        // The container stops: the stream ends.
        task.await.unwrap().unwrap();
        assert!(rx.recv().await.is_none());
    }
}
