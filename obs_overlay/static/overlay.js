/*
 * lipcast overlay page (OBS Browser Source). No build step; protocol in obs_overlay/events.py.
 *
 * Between replies the persona idles (an image that breathes, or a muted loop clip). Each reply
 * clip is fetched as soon as it is announced; while one plays, the next is loaded into the
 * second <video> element, so when the first ends the second starts at once. Clips play strictly
 * in the order received and a (turn_id, seq) is never played twice, even across reconnects and
 * reloads. The connection is re-opened with backoff whenever it drops.
 *
 * URL options: ?captions=0 hides captions, ?banner=0 hides "answering @viewer" and the queue,
 * ?webaudio=0 lets each clip player use its own audio output (see routeAudio).
 * window.lipcastOverlay.log holds what happened, measured on the page (used by the tests).
 */
"use strict";

(() => {
  const PROTOCOL = 1;
  const PLAYED_KEY = "lipcast.overlay.played";
  const RELOAD_KEY = "lipcast.overlay.reloadedAt";
  const PLAYED_KEEP = 500;
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const LOG_KEEP = 2000;

  const $ = (id) => document.getElementById(id);
  const stage = $("stage");
  const idleImage = $("idle-image");
  const idleVideo = $("idle-video");
  const players = [$("clip-a"), $("clip-b")];
  const caption = $("caption");
  const captionText = $("caption-text");
  const banner = $("banner");
  const bannerViewer = $("banner-viewer");
  const queueBadge = $("queue");
  const assets = document.querySelector('meta[name="lipcast-assets"]').content;
  const params = new URLSearchParams(location.search);

  // ------------------------------------------------------------------ measurements

  const log = [];
  function record(event, fields) {
    const entry = Object.assign({ event, t: performance.now() }, fields || {});
    log.push(entry);
    if (log.length > LOG_KEEP) log.splice(0, log.length - LOG_KEEP);
    return entry;
  }

  // Caption changes as the DOM shows them, so captions can be checked against playback.
  new MutationObserver(() => {
    record("caption", { text: captionText.textContent, shown: caption.classList.contains("show") });
  }).observe(caption, { subtree: true, childList: true, characterData: true, attributes: true });

  function audioFacts(video) {
    const decoded = typeof video.webkitAudioDecodedByteCount === "number"
      ? video.webkitAudioDecodedByteCount : null;
    const tracks = video.audioTracks ? video.audioTracks.length : null;
    const hasAudio = (decoded !== null && decoded > 0) || Boolean(video.mozHasAudio) || tracks > 0;
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      hasAudio,
      audioBytes: decoded,
      audioTracks: tracks,
      videoFrames: quality ? quality.totalVideoFrames : null,
      mediaDuration: video.duration,
      currentTime: video.currentTime,
    };
  }

  // ------------------------------------------------------------------ state

  const options = { captions: true, banner: true, hold_ms: 1500 };
  const forced = {};
  if (params.has("captions")) forced.captions = params.get("captions") !== "0";
  if (params.has("banner")) forced.banner = params.get("banner") !== "0";

  const played = new Set(loadPlayed());
  const queue = []; // clips received and not yet started: {clip, key, ids, blobUrl, error}
  const byKey = new Map(); // key -> item, for items queued or playing
  const endedTurns = new Set();
  const cancelledTurns = new Set();
  const blobOf = new Map(); // <video> -> the blob URL it holds
  let current = null; // {item, video, started}
  let preloaded = null; // {item, video}
  let paused = false;
  let active = false;
  let holdTimer = null;
  let socket = null;
  let connected = false;
  let backoff = BACKOFF_MIN_MS;
  let idleSource = { image: null, video: null };

  function loadPlayed() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(PLAYED_KEY) || "[]");
      return Array.isArray(saved) ? saved : [];
    } catch (err) {
      return [];
    }
  }

  function markPlayed(key) {
    played.add(key);
    try {
      sessionStorage.setItem(PLAYED_KEY, JSON.stringify(Array.from(played).slice(-PLAYED_KEEP)));
    } catch (err) {
      /* storage unavailable: the in-memory set still protects this page's lifetime */
    }
  }

  const keyOf = (clip) => `${clip.turn_id}#${clip.seq}`;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function report(item, type, reason) {
    for (const clipId of item.ids) send({ type, clip_id: clipId, reason: reason || "" });
  }

  // ------------------------------------------------------------------ presentation

  function setIdle(idle) {
    if (idle.image === idleSource.image && idle.video === idleSource.video) return;
    idleSource = idle;
    if (idle.video) {
      idleImage.hidden = true;
      idleVideo.hidden = false;
      idleVideo.src = idle.video;
      idleVideo.play().catch(() => {});
    } else if (idle.image) {
      idleVideo.hidden = true;
      idleVideo.removeAttribute("src");
      idleImage.src = idle.image;
      idleImage.hidden = false;
    } else {
      idleImage.hidden = true;
      idleVideo.hidden = true;
    }
  }

  function showClip(item, video) {
    for (const player of players) player.classList.toggle("front", player === video);
    stage.classList.add("active");
    if (!active) {
      active = true;
      record("active");
    }
    captionText.textContent = item.clip.caption || "";
    caption.classList.toggle("show", options.captions && Boolean(item.clip.caption));
    const viewer = item.clip.viewer;
    bannerViewer.textContent = viewer ? `@${viewer}` : "";
    banner.hidden = !(options.banner && viewer);
  }

  function goIdle() {
    clearTimeout(holdTimer);
    holdTimer = null;
    if (current) return;
    stage.classList.remove("active");
    caption.classList.remove("show");
    banner.hidden = true;
    if (active) {
      active = false;
      record("idle");
    }
  }

  function showQueue(waiting) {
    queueBadge.textContent = waiting === 1 ? "1 more waiting" : `${waiting} more waiting`;
    queueBadge.hidden = !(options.banner && waiting > 0);
  }

  // ------------------------------------------------------------------ playback

  function load(video, item) {
    const old = blobOf.get(video);
    video.src = item.blobUrl;
    blobOf.set(video, item.blobUrl);
    if (old && old !== item.blobUrl) URL.revokeObjectURL(old);
    video.load();
  }

  function unload(video) {
    video.pause();
    video.classList.remove("front");
    const old = blobOf.get(video);
    blobOf.delete(video);
    video.removeAttribute("src");
    video.load();
    if (old) URL.revokeObjectURL(old);
  }

  // A player that is neither playing nor showing the last frame of the clip that just ended.
  function freePlayer() {
    const busy = current ? current.video : null;
    return players.find((p) => p !== busy && !p.classList.contains("front"))
      || players.find((p) => p !== busy);
  }

  function dropItem(item, type, reason) {
    byKey.delete(item.key);
    if (item.blobUrl && ![...blobOf.values()].includes(item.blobUrl)) {
      URL.revokeObjectURL(item.blobUrl);
    }
    report(item, type, reason);
    record(type, { clip_id: item.clip.clip_id, turn_id: item.clip.turn_id, seq: item.clip.seq, reason });
  }

  function pump() {
    if (paused) return;
    while (queue.length && (queue[0].error || cancelledTurns.has(queue[0].clip.turn_id))) {
      const item = queue.shift();
      dropItem(item, item.error ? "failed" : "skipped", item.error || "");
    }
    if (!current) {
      if (queue.length && queue[0].blobUrl) startNext();
      else if (!queue.length && !holdTimer) goIdle();
      return;
    }
    // Preload once the current clip shows: until then the other player shows the last frame.
    if (!preloaded && current.started && queue.length && queue[0].blobUrl) {
      const video = freePlayer();
      load(video, queue[0]);
      preloaded = { item: queue[0], video };
    }
  }

  function startNext() {
    const item = queue.shift();
    let video;
    if (preloaded && preloaded.item === item) {
      video = preloaded.video;
    } else {
      if (preloaded) unload(preloaded.video);
      video = freePlayer();
      load(video, item);
    }
    preloaded = null;
    clearTimeout(holdTimer);
    holdTimer = null;
    current = { item, video, started: false, clocked: false };
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback((now, frame) => {
        if (current && current.item === item) {
          // When the clip's media time 0 was (or would have been) on screen.
          const at = frame.expectedDisplayTime;
          record("first-frame", {
            clip_id: item.clip.clip_id,
            at,
            mediaTime: frame.mediaTime,
            timelineStart: at - frame.mediaTime * 1000,
          });
        }
      });
    }
    video.play().catch((err) => {
      if (current && current.item === item) {
        current = null;
        unload(video);
        dropItem(item, "failed", String(err));
        pump();
      }
    });
  }

  function onPlaying(event) {
    const video = event.target;
    if (!current || current.video !== video || current.started) return;
    current.started = true;
    const item = current.item;
    showClip(item, video);
    markPlayed(item.key);
    report(item, "started");
    record("play", {
      clip_id: item.clip.clip_id,
      turn_id: item.clip.turn_id,
      seq: item.clip.seq,
      caption: captionText.textContent,
      player: video.id,
    });
    // The other player now holds nothing worth keeping: load the next clip into it.
    pump();
  }

  function onEnded(event) {
    const video = event.target;
    if (!current || current.video !== video) return;
    const endedAt = performance.now();
    const facts = audioFacts(video);
    const item = current.item;
    current = null;
    // Start the next clip before any bookkeeping: the gap between clips is what viewers notice.
    const next = !paused && queue.length && queue[0].blobUrl ? queue[0] : null;
    if (next) startNext();
    record("ended", Object.assign({
      t: endedAt,
      clip_id: item.clip.clip_id,
      turn_id: item.clip.turn_id,
      seq: item.clip.seq,
      player: video.id,
    }, facts));
    byKey.delete(item.key);
    report(item, "ended");
    if (next) return;
    const turn = item.clip.turn_id;
    if (queue.length || (!endedTurns.has(turn) && !cancelledTurns.has(turn))) {
      // More of this reply is coming: hold the last frame rather than flash to idle.
      record("hold", { turn_id: turn });
      clearTimeout(holdTimer);
      holdTimer = setTimeout(() => {
        holdTimer = null;
        goIdle();
      }, options.hold_ms);
      pump();
    } else {
      goIdle();
    }
  }

  // Once per clip, when it has played 0.1 s: the moment its media clock (the audio clock while
  // it has sound) was at 0, extrapolated back. Compared with the previous clip's end, this is
  // the gap a viewer hears, where the "playing" event only says that playback was requested.
  function onTimeUpdate(event) {
    const video = event.target;
    if (!current || current.video !== video || current.clocked || video.currentTime < 0.1) return;
    current.clocked = true;
    record("clock", {
      clip_id: current.item.clip.clip_id,
      start: performance.now() - video.currentTime * 1000,
    });
  }

  function onError(event) {
    const video = event.target;
    if (!current || current.video !== video) return;
    const item = current.item;
    current = null;
    const reason = video.error ? `media error ${video.error.code}` : "media error";
    unload(video);
    dropItem(item, "failed", reason);
    pump();
  }

  for (const player of players) {
    player.addEventListener("playing", onPlaying);
    player.addEventListener("ended", onEnded);
    player.addEventListener("timeupdate", onTimeUpdate);
    player.addEventListener("error", onError);
  }

  function stopCurrent(type) {
    if (!current) return;
    const { item, video } = current;
    current = null;
    unload(video);
    dropItem(item, type, "");
  }

  function dropTurn(turnId) {
    cancelledTurns.add(turnId);
    if (current && current.item.clip.turn_id === turnId) stopCurrent("skipped");
    if (preloaded && preloaded.item.clip.turn_id === turnId) {
      unload(preloaded.video);
      preloaded = null;
    }
    for (let i = queue.length - 1; i >= 0; i -= 1) {
      if (queue[i].clip.turn_id === turnId) dropItem(queue.splice(i, 1)[0], "skipped", "");
    }
  }

  // ------------------------------------------------------------------ events

  function onClip(clip) {
    const key = keyOf(clip);
    if (played.has(key)) {
      // Played before a reconnect or reload: tell the server, never play it again.
      record("duplicate", { clip_id: clip.clip_id, turn_id: clip.turn_id, seq: clip.seq });
      send({ type: "ended", clip_id: clip.clip_id });
      return;
    }
    const known = byKey.get(key);
    if (known) {
      // Re-sent (a new server instance gives it a new id): report under both ids.
      if (!known.ids.includes(clip.clip_id)) known.ids.push(clip.clip_id);
      record("duplicate", { clip_id: clip.clip_id, turn_id: clip.turn_id, seq: clip.seq });
      return;
    }
    if (cancelledTurns.has(clip.turn_id)) {
      send({ type: "skipped", clip_id: clip.clip_id });
      return;
    }
    const item = { clip, key, ids: [clip.clip_id], blobUrl: null, error: null };
    byKey.set(key, item);
    queue.push(item);
    record("received", { clip_id: clip.clip_id, turn_id: clip.turn_id, seq: clip.seq });
    fetch(clip.url, { cache: "no-store" })
      .then((response) => {
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        return response.blob();
      })
      .then((blob) => {
        item.blobUrl = URL.createObjectURL(blob);
      })
      .catch((err) => {
        item.error = `fetch failed: ${err.message || err}`;
      })
      .finally(pump);
  }

  function applyOptions(sent) {
    Object.assign(options, sent || {}, forced);
    if (!options.captions) caption.classList.remove("show");
    if (!options.banner) {
      banner.hidden = true;
      queueBadge.hidden = true;
    }
  }

  function setPaused(value) {
    if (paused === value) return;
    paused = value;
    record(value ? "pause" : "resume");
    if (!current) {
      if (!paused) pump();
      return;
    }
    if (paused) current.video.pause();
    else current.video.play().catch(() => {});
  }

  function onHello(message) {
    if (message.protocol !== PROTOCOL || message.assets !== assets) {
      // The server was upgraded: load the new page (at most every 10 s, never in a loop).
      const last = Number(sessionStorage.getItem(RELOAD_KEY) || 0);
      if (Date.now() - last > 10000) {
        sessionStorage.setItem(RELOAD_KEY, String(Date.now()));
        record("reload");
        location.reload();
        return;
      }
    }
    applyOptions(message.options);
    setIdle(message.idle || {});
    setPaused(Boolean(message.paused));
    record("hello", { instance: message.instance });
  }

  const handlers = {
    hello: onHello,
    clip: onClip,
    turn_started: (m) => record("turn_started", { turn_id: m.turn_id, viewer: m.viewer }),
    turn_ended: (m) => {
      endedTurns.add(m.turn_id);
      record("turn_ended", { turn_id: m.turn_id });
      // Holding the last frame for this reply's next clip? There is none: go idle now.
      if (!current && holdTimer && !queue.length) goIdle();
    },
    skip: (m) => {
      const turnId = m.turn_id || (current ? current.item.clip.turn_id : null);
      record("skip", { turn_id: turnId });
      if (turnId !== null) dropTurn(turnId);
      pump();
    },
    clear: () => {
      record("clear");
      const turns = new Set(queue.map((item) => item.clip.turn_id));
      if (current) turns.add(current.item.clip.turn_id);
      for (const turnId of turns) dropTurn(turnId);
      goIdle();
    },
    pause: () => setPaused(true),
    resume: () => setPaused(false),
    queue: (m) => showQueue(m.replies_waiting),
  };

  // ------------------------------------------------------------------ connection

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws`);
    socket.addEventListener("open", () => {
      connected = true;
      backoff = BACKOFF_MIN_MS;
      record("connected");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      const handler = handlers[message.type];
      if (handler) handler(message);
    });
    socket.addEventListener("close", () => {
      if (connected) record("disconnected");
      connected = false;
      socket = null;
      // Reconnect with exponential backoff and a little jitter; playback carries on meanwhile.
      const delay = backoff * (1 + Math.random() * 0.2);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      setTimeout(connect, delay);
    });
  }

  window.lipcastOverlay = {
    log,
    state: () => ({
      connected,
      paused,
      active,
      queued: queue.length,
      current: current ? current.item.clip.clip_id : null,
      played: played.size,
    }),
  };

  // Route the clip players' sound through one always-running AudioContext: a <video> that
  // starts playing then needs no audio output of its own, which in Chromium takes 40-80 ms to
  // open (a gap between sentences). Where the context may not run (no autoplay permission in
  // an ordinary browser tab) the players keep their own output, so they are never silenced.
  async function routeAudio() {
    let context = null;
    if (params.get("webaudio") === "0") {
      record("audio-route", { route: "element" });
      return;
    }
    try {
      context = new AudioContext({ latencyHint: "interactive" });
      if (context.state !== "running") {
        await Promise.race([context.resume(), new Promise((done) => setTimeout(done, 500))]);
      }
      if (context.state === "running") {
        for (const player of players) {
          context.createMediaElementSource(player).connect(context.destination);
        }
        record("audio-route", { route: "webaudio", baseLatency: context.baseLatency });
        return;
      }
    } catch (err) {
      /* no Web Audio: the players' own output is fine */
    }
    if (context) context.close().catch(() => {});
    record("audio-route", { route: "element" });
  }

  routeAudio().finally(connect);
})();
