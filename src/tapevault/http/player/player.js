// tapevault's player page: one <audio> element plays a session's recordings as one timeline.
// The link's secret is in the address's fragment (#k=...), which browsers never send to a
// server: it is read here and sent in a header to this server only. Media URLs live a few
// minutes, so the playlist is fetched again before they expire, and again whenever the audio
// fails (an expired or refused URL): playback resumes where it was, without the listener's help.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const audio = $("audio");
  const canvas = $("wave");
  const playButton = $("play");
  const speed = $("speed");
  const download = $("download");
  const message = $("message");
  const controls = $("controls");
  const segmentLabel = $("segment");

  const linkId = location.pathname.split("/").filter(Boolean)[1] || "";
  const secret = new URLSearchParams(location.hash.slice(1)).get("k") || "";

  let list = null; // the playlist: tracks with offsets (ms) and short-lived URLs
  let index = 0; // the track in the <audio> element
  let playing = false; // what the listener wants, whatever the element is doing now
  let pending = null; // {at, play}: applied once the element has loaded a new source
  let lastPosition = 0; // seconds on the timeline, as last seen playing
  let renewTimer = 0;
  let recovering = false;
  let stale = false; // the URLs expired while paused
  let failures = 0;
  const peaks = new Map(); // recording id -> Float32Array of |amplitude| in [0, 1], or null
  // For tests and curious people: every resume after a new URL, with where it was and went.
  const record = { resumes: [], renewals: 0, errors: 0 };
  window.tapevaultPlayer = record;

  const clock = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
  };
  const total = () => (list ? list.duration_ms / 1000 : 0);
  const offset = (i) => list.tracks[i].offset_ms / 1000;
  const position = () => {
    if (!list) return 0;
    if (pending) return offset(index) + pending.at;
    return offset(index) + (audio.currentTime || 0);
  };
  record.position = position;
  record.state = () => ({ position: position(), playing, index, paused: audio.paused, stale });

  function show(text, fatal) {
    message.textContent = text;
    message.hidden = false;
    if (fatal) {
      controls.hidden = true;
      audio.removeAttribute("src");
      audio.load();
      clearTimeout(renewTimer);
    }
  }

  async function fetchPlaylist() {
    const response = await fetch(`/player/${encodeURIComponent(linkId)}/playlist`, {
      headers: { "X-Player-Key": secret },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error((body && body.message) || `HTTP ${response.status}`);
      error.status = response.status;
      error.reason = body && body.reason;
      error.retryAfter = Number(response.headers.get("retry-after")) || 0;
      throw error;
    }
    return body;
  }

  // What went wrong, in words for the listener; true when it is worth trying again.
  function explain(error) {
    if (error.status === 410) {
      show(error.reason === "revoked"
        ? "This player link was revoked — ask for a new one."
        : error.reason === "expired" && error.message.includes("player link")
          ? "This player link has expired — ask for a new one."
          : `This recording is no longer available: ${error.message}`, true);
      return false;
    }
    if (error.status === 404 && error.retryAfter) {
      show("The recording is still being processed; this page will play it when it is ready.");
      return true;
    }
    if (error.status === 404) {
      show("This player link does not exist. Check that the whole link was copied.", true);
      return false;
    }
    show(`The recording could not be loaded (${error.message}); trying again…`);
    return true;
  }

  function trackAt(seconds) {
    for (let i = list.tracks.length - 1; i >= 0; i -= 1) {
      if (seconds >= offset(i)) return i;
    }
    return 0;
  }

  function load(i, at, play) {
    const track = list.tracks[i];
    index = i;
    pending = { at: Math.max(0, at), play };
    audio.src = track.url;
    audio.playbackRate = Number(speed.value);
    download.href = track.url;
    download.setAttribute("download", `${list.session_id}-${track.sequence_number}.wav`);
    segmentLabel.textContent = list.tracks.length > 1
      ? `Playing segment ${i + 1} of ${list.tracks.length}`
      : (track.channel ? `Playing the ${track.channel} recording` : "Playing the recording");
  }

  audio.addEventListener("loadedmetadata", () => {
    if (!pending) return;
    const { at, play } = pending;
    audio.currentTime = Math.min(at, audio.duration || at);
    pending = null;
    audio.playbackRate = Number(speed.value);
    if (play) audio.play().catch(() => {});
  });

  function seek(seconds) {
    if (!list) return;
    const target = Math.min(Math.max(0, seconds), Math.max(0, total() - 0.05));
    const i = trackAt(target);
    if (i !== index || pending) load(i, target - offset(i), playing);
    else audio.currentTime = target - offset(i);
    lastPosition = target;
    draw();
  }
  record.seek = seek;

  // A fresh playlist while playing: the same place in the same track, from a new URL.
  async function renew(reason) {
    if (recovering) return;
    recovering = true;
    const from = pending ? position() : Math.max(position(), reason === "error" ? lastPosition : 0);
    try {
      const fresh = await fetchPlaylist();
      failures = 0;
      stale = false;
      list = fresh;
      message.hidden = true;
      const at = Math.min(from, total());
      const i = trackAt(at);
      const wasPlaying = playing;
      load(i, at - offset(i), wasPlaying);
      const resume = { reason, from, landed: null };
      record.resumes.push(resume);
      // Where the new source actually is once it has seeked: what the listener hears next.
      audio.addEventListener("seeked", () => { resume.landed = position(); }, { once: true });
      if (reason === "renewal") record.renewals += 1;
      schedule();
      loadPeaks();
    } catch (error) {
      failures += 1;
      if (explain(error)) setTimeout(() => renew(reason), Math.min(30, 2 ** failures) * 1000);
    } finally {
      recovering = false;
    }
  }

  // Renew a while before the URLs expire: a third of their life ahead, between 1 and 30 s.
  function schedule() {
    clearTimeout(renewTimer);
    const expires = Math.min(...list.tracks.map((t) => t.expires_at));
    const life = expires - list.server_time;
    const margin = Math.min(30, Math.max(1, life / 3));
    renewTimer = setTimeout(() => {
      // A paused page renews when it plays again: no fetches (and no access records) while
      // a tab sits idle for hours.
      if (playing) renew("renewal");
      else stale = true;
    }, Math.max(0.5, life - margin) * 1000);
  }

  audio.addEventListener("error", () => {
    if (!list || !audio.getAttribute("src")) return;
    record.errors += 1;
    renew("error");
  });

  audio.addEventListener("ended", () => {
    if (index + 1 < list.tracks.length) {
      load(index + 1, 0, true);
    } else {
      playing = false;
      update();
    }
  });

  audio.addEventListener("timeupdate", () => {
    if (!pending && audio.currentTime > 0) lastPosition = position();
    update();
  });
  audio.addEventListener("play", update);
  audio.addEventListener("pause", update);

  function toggle() {
    if (!list) return;
    playing = !playing;
    if (playing) {
      if (position() >= total() - 0.05) seek(0); // at the end: from the start again
      if (stale) {
        renew("renewal");
      } else if (!pending) {
        audio.play().catch(() => {});
      } else {
        pending.play = true;
      }
    } else {
      audio.pause();
      if (pending) pending.play = false;
    }
    update();
  }
  record.toggle = toggle;

  function update() {
    if (!list) return;
    const now = position();
    $("elapsed").textContent = clock(now);
    $("total").textContent = clock(total());
    playButton.textContent = playing ? "Pause" : "Play";
    playButton.setAttribute("aria-label", playing ? "Pause" : "Play");
    canvas.setAttribute("aria-valuemax", String(Math.round(total())));
    canvas.setAttribute("aria-valuenow", String(Math.round(now)));
    canvas.setAttribute("aria-valuetext", `${clock(now)} of ${clock(total())}`);
    draw();
  }

  // Peaks (BBC audiowaveform JSON) as one level per pixel column; a track without any is a line.
  async function loadPeaks() {
    for (const track of list.tracks) {
      if (!track.peaks_url || peaks.has(track.recording_id)) continue;
      peaks.set(track.recording_id, null);
      try {
        const response = await fetch(track.peaks_url, { credentials: "omit", cache: "no-store" });
        if (!response.ok) throw new Error(String(response.status));
        const body = await response.json();
        const channels = body.channels || 1;
        const full = body.bits === 8 ? 128 : 32768;
        const data = body.data || [];
        const columns = Math.floor(data.length / (2 * channels));
        const levels = new Float32Array(columns);
        for (let c = 0; c < columns; c += 1) {
          let level = 0;
          for (let k = 0; k < 2 * channels; k += 1) {
            level = Math.max(level, Math.abs(data[c * 2 * channels + k]) / full);
          }
          levels[c] = Math.min(1, level);
        }
        peaks.set(track.recording_id, levels);
        draw();
      } catch (_) {
        peaks.delete(track.recording_id); // tried again with the next playlist
      }
    }
  }

  function draw() {
    const context = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    const middle = height / 2;
    context.clearRect(0, 0, width, height);
    if (!list || !total()) return;
    const played = (position() / total()) * width;
    for (const track of list.tracks) {
      const start = (track.offset_ms / list.duration_ms) * width;
      const span = (track.duration_ms / list.duration_ms) * width;
      const levels = peaks.get(track.recording_id);
      for (let x = Math.floor(start); x < Math.min(width, start + span); x += 1) {
        context.fillStyle = x < played ? "#1a5fb4" : "#9a9996";
        if (levels && levels.length) {
          const from = Math.floor(((x - start) / span) * levels.length);
          const to = Math.max(from + 1, Math.floor(((x + 1 - start) / span) * levels.length));
          let level = 0;
          for (let k = from; k < Math.min(to, levels.length); k += 1) level = Math.max(level, levels[k]);
          const h = Math.max(1, level * (height - 4));
          context.fillRect(x, middle - h / 2, 1, h);
        } else {
          context.fillRect(x, middle - 1, 1, 2); // no peaks: a flat line
        }
      }
      context.fillStyle = "#ffffff";
      if (start > 0) context.fillRect(Math.floor(start), 0, 1, height); // where segments meet
    }
    context.fillStyle = "#c01c28";
    context.fillRect(Math.min(width - 2, played), 0, 2, height);
  }

  // Click or drag on the waveform to seek.
  let dragging = false;
  const fraction = (event) => {
    const box = canvas.getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  };
  canvas.addEventListener("pointerdown", (event) => {
    dragging = true;
    canvas.setPointerCapture(event.pointerId);
    seek(fraction(event) * total());
  });
  canvas.addEventListener("pointermove", (event) => {
    if (dragging) seek(fraction(event) * total());
  });
  canvas.addEventListener("pointerup", () => { dragging = false; });

  playButton.addEventListener("click", toggle);
  speed.addEventListener("change", () => { audio.playbackRate = Number(speed.value); });

  document.addEventListener("keydown", (event) => {
    if (!list || event.altKey || event.ctrlKey || event.metaKey) return;
    const tag = event.target.tagName;
    if (event.key === " " && tag !== "BUTTON" && tag !== "SELECT" && tag !== "A") {
      event.preventDefault();
      toggle();
    } else if ((event.key === "ArrowLeft" || event.key === "ArrowRight") && tag !== "SELECT") {
      event.preventDefault();
      seek(position() + (event.key === "ArrowLeft" ? -5 : 5));
    } else if (event.key === "Home" && tag === "CANVAS") {
      event.preventDefault();
      seek(0);
    } else if (event.key === "End" && tag === "CANVAS") {
      event.preventDefault();
      seek(total());
    }
  });

  async function start() {
    if (!linkId || !secret) {
      show("This player link is incomplete: the part after # is missing.", true);
      return;
    }
    show("Loading…");
    try {
      list = await fetchPlaylist();
    } catch (error) {
      failures += 1;
      if (explain(error)) setTimeout(start, Math.max(error.retryAfter || 0, 2) * 1000);
      return;
    }
    failures = 0;
    message.hidden = true;
    controls.hidden = false;
    load(0, 0, false);
    schedule();
    update();
    loadPeaks();
  }

  start();
})();
