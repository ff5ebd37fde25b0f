/*
 * lipcast overlay page (OBS Browser Source). No build step; protocol in obs_overlay/events.py.
 *
 * A sprite persona is drawn here, on a transparent canvas, at the display's frame rate: its
 * layers come from the persona's atlas, and while it talks each frame's mouth comes from the
 * clip's timeline, in time with the clip's speech played through Web Audio. Between replies it
 * is the same drawing with the mouth closed: it sways, breathes and blinks on the page's own
 * continuous clock, so nothing jumps when a reply starts or ends. A sentence's speech is
 * scheduled to start on the exact audio sample where the previous one ends (no gap).
 *
 * Video clips (the wav2lip renderer, or a persona without an atlas) play in two <video>
 * elements: while one plays, the next is loaded into the other. Between them the idle image
 * breathes (or a muted loop plays).
 *
 * Clips play strictly in the order received and a (turn_id, seq) is never played twice, even
 * across reconnects and reloads; a reply that could not begin before its deadline is dropped.
 * The connection is re-opened with backoff whenever it drops.
 *
 * URL options: ?captions=0 hides captions, ?banner=0 hides "answering @viewer" and the queue,
 * ?motion=0 holds the persona's head still, ?webaudio=0 lets each video player use its own
 * audio output (see routeAudio).
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
  const canvas = $("persona");
  const paint = canvas.getContext("2d");
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

  const options = { captions: true, banner: true, hold_ms: 1500, motion: true };
  const forced = {};
  if (params.has("captions")) forced.captions = params.get("captions") !== "0";
  if (params.has("banner")) forced.banner = params.get("banner") !== "0";
  if (params.has("motion")) forced.motion = params.get("motion") !== "0";

  const played = new Set(loadPlayed());
  const queue = []; // clips received and not yet started: {clip, key, ids, blobUrl, error}
  const byKey = new Map(); // key -> item, for items queued or playing
  const endedTurns = new Set();
  const cancelledTurns = new Set();
  const blobOf = new Map(); // <video> -> the blob URL it holds
  let current = null; // {item, video, started} or, for a sprite clip, {item, sprite: true, ...}
  let preloaded = null; // {item, video}, or a sprite clip scheduled to start at current's end
  const begunTurns = new Set(); // turns this page has begun to show
  let audio = null; // the AudioContext every sprite clip (and, routed, every video) sounds through
  let persona = null; // {image, manifest} of the sprite persona, once its atlas has loaded
  let blink = { next: 0, started: -1 };
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

  function showCaption(item) {
    captionText.textContent = item.clip.caption || "";
    caption.classList.toggle("show", options.captions && Boolean(item.clip.caption));
    const viewer = item.clip.viewer;
    bannerViewer.textContent = viewer ? `@${viewer}` : "";
    banner.hidden = !(options.banner && viewer);
  }

  function showClip(item, video) {
    for (const player of players) player.classList.toggle("front", player === video);
    if (video) stage.classList.add("active");
    if (!active) {
      active = true;
      record("active");
    }
    showCaption(item);
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

  // ------------------------------------------------------------------ the sprite persona

  function setPersona(info) {
    if (!info) {
      persona = null;
      stage.classList.remove("sprite");
      return;
    }
    const image = new Image();
    image.addEventListener("load", () => {
      persona = { image, manifest: info.manifest };
      canvas.width = info.manifest.size;
      canvas.height = info.manifest.size;
      stage.classList.add("sprite");
      record("persona", { size: info.manifest.size });
    });
    image.addEventListener("error", () => record("persona-failed", { url: info.atlas }));
    image.src = info.atlas;
  }

  function blinkClosure(now, manifest) {
    const motion = manifest.motion;
    const frameS = 1 / manifest.fps;
    if (blink.next === 0) blink.next = now + 0.8 + Math.random() * 1.7;
    if (now >= blink.next) {
      blink.started = blink.next;
      const [low, high] = motion.blink_interval_s;
      blink.next += low + Math.random() * (high - low);
      if (blink.next < now) blink.next = now + low;
    }
    if (blink.started < 0) return 0;
    const index = Math.floor((now - blink.started) / frameS);
    return index >= 0 && index < motion.blink_closure.length ? motion.blink_closure[index] : 0;
  }

  // The mouth in this display frame: from the timeline of the sprite clip sounding now.
  function mouthNow() {
    if (!current || !current.sprite || !audio) return null;
    const t = audio.currentTime - current.startAt;
    if (t < 0) return null;
    const timeline = current.item.clip.timeline;
    const index = Math.floor(t * timeline.fps);
    if (index >= timeline.levels.length) return null;
    return {
      index,
      viseme: Number(timeline.visemes[index]),
      level: timeline.levels[index],
      openness: timeline.openness ? timeline.openness[index] : 0,
    };
  }

  function draw(nowMs) {
    requestAnimationFrame(draw);
    if (current && current.sprite) promote();
    if (!persona) return;
    const manifest = persona.manifest;
    const motion = manifest.motion;
    const now = nowMs / 1000;
    const mouth = mouthNow();
    const scale = manifest.size / 512;
    let dx = 0;
    let dy = 0;
    if (options.motion) {
      // The sprite renderer's sway and nod (lipsync/timeline.py head_pose), on the page's clock.
      const [sideways, updown] = motion.periods_s;
      dx = motion.sway_px * scale * Math.sin((2 * Math.PI * now) / sideways);
      dy = motion.sway_px * scale * 0.7 * Math.sin((2 * Math.PI * now) / updown + 1.0);
      dy += motion.nod_px * scale * (mouth ? mouth.openness : 0);
    }
    paint.setTransform(1, 0, 0, 1, dx, dy);
    paint.clearRect(-dx, -dy, canvas.width, canvas.height);
    const atlas = persona.image;
    const [bx, by, bw, bh] = manifest.base;
    paint.drawImage(atlas, bx, by, bw, bh, 0, 0, bw, bh);
    const viseme = manifest.visemes[mouth ? mouth.viseme : 0];
    const [mx, my, mw, mh] = manifest.mouths[viseme][mouth ? mouth.level : 0];
    paint.drawImage(atlas, mx, my, mw, mh, manifest.mouth_at[0], manifest.mouth_at[1], mw, mh);
    const lid = blinkClosure(now, manifest);
    const lidKey = lid > 0 ? Object.keys(manifest.eyelids).find((k) => Math.abs(Number(k) - lid) < 1e-6) : null;
    if (lidKey) {
      const [lx, ly, lw, lh] = manifest.eyelids[lidKey];
      for (const [ex, ey] of manifest.eyelids_at) paint.drawImage(atlas, lx, ly, lw, lh, ex, ey, lw, lh);
    }
    if (mouth && current) {
      current.framesDrawn = (current.framesDrawn || 0) + 1;
      current.maxLevel = Math.max(current.maxLevel || 0, mouth.level);
    }
    if (mouth && current && !current.drawn) {
      // The first frame of this clip on screen ("first clip shown" is measured here).
      current.drawn = true;
      record("first-frame", {
        clip_id: current.item.clip.clip_id,
        wall: performance.timeOrigin + performance.now(),
      });
    }
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
    const busy = current && !current.sprite ? current.video : null;
    return players.find((p) => p !== busy && !p.classList.contains("front"))
      || players.find((p) => p !== busy);
  }

  const isReady = (item) => Boolean(item.blobUrl || item.buffer);

  function dropItem(item, type, reason) {
    byKey.delete(item.key);
    if (item.blobUrl && ![...blobOf.values()].includes(item.blobUrl)) {
      URL.revokeObjectURL(item.blobUrl);
    }
    report(item, type, reason);
    record(type, { clip_id: item.clip.clip_id, turn_id: item.clip.turn_id, seq: item.clip.seq, reason });
  }

  // A reply that has not begun on this page and whose deadline passed is never shown.
  function expired(item) {
    const turn = item.clip.turn_id;
    if (begunTurns.has(turn) || item.expiresAt === null) return false;
    if (performance.now() <= item.expiresAt) return false;
    cancelledTurns.add(turn);
    return true;
  }

  function pump() {
    if (paused) return;
    while (queue.length && (queue[0].error || cancelledTurns.has(queue[0].clip.turn_id)
      || (!current && isReady(queue[0]) && expired(queue[0])))) {
      const item = queue.shift();
      const why = item.error ? "failed" : "skipped";
      dropItem(item, why, item.error || (cancelledTurns.has(item.clip.turn_id) ? "" : "expired"));
    }
    if (!current) {
      if (queue.length && isReady(queue[0])) startNext();
      else if (!queue.length && !holdTimer) goIdle();
      return;
    }
    if (preloaded || !current.started || !queue.length || !isReady(queue[0])) return;
    const next = queue[0];
    if (current.sprite && next.buffer) {
      // Sound the next sentence from the very sample where this one ends: no gap at all.
      queue.shift();
      preloaded = { item: next, sprite: true, ...schedule(next, current.endAt) };
    } else if (!current.sprite && next.blobUrl) {
      // Preload once the current clip shows: until then the other player shows the last frame.
      const video = freePlayer();
      load(video, next);
      preloaded = { item: next, video };
    }
  }

  function schedule(item, at) {
    const source = audio.createBufferSource();
    source.buffer = item.buffer;
    source.connect(audio.destination);
    const startAt = Math.max(at, audio.currentTime + 0.005);
    source.start(startAt);
    source.addEventListener("ended", () => onSpriteEnded(item));
    // Display frames promote it when it starts; where none are drawn (a hidden tab), a timer.
    setTimeout(() => {
      if (current && current.sprite) promote();
    }, Math.max(0, (startAt - audio.currentTime) * 1000) + 5);
    return { source, startAt, endAt: startAt + item.buffer.duration, started: false, drawn: false };
  }

  function startNext() {
    const item = queue[0];
    if (item.buffer) {
      queue.shift();
      clearTimeout(holdTimer);
      holdTimer = null;
      current = { item, sprite: true, ...schedule(item, audio.currentTime + 0.01) };
      return;
    }
    queue.shift();
    let video;
    if (preloaded && preloaded.item === item) {
      video = preloaded.video;
    } else {
      if (preloaded && preloaded.video) unload(preloaded.video);
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
            wall: performance.timeOrigin + at,
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

  function began(item, fields) {
    begunTurns.add(item.clip.turn_id);
    markPlayed(item.key);
    report(item, "started");
    record("play", Object.assign({
      clip_id: item.clip.clip_id,
      turn_id: item.clip.turn_id,
      seq: item.clip.seq,
      caption: captionText.textContent,
    }, fields));
  }

  // Called every display frame while a sprite clip is current: when its speech has begun,
  // show its caption and report it; when the next one's has, it becomes current.
  function promote() {
    if (preloaded && preloaded.sprite && audio.currentTime >= preloaded.startAt) {
      const previous = current;
      current = preloaded;
      preloaded = null;
      finishSprite(previous);
    }
    if (!current.started && audio.currentTime >= current.startAt) {
      current.started = true;
      showClip(current.item, null);
      began(current.item, { kind: "sprite", audioStart: current.startAt });
      pump();
    }
  }

  function finishSprite(done) {
    byKey.delete(done.item.key);
    report(done.item, "ended");
    record("ended", {
      clip_id: done.item.clip.clip_id,
      turn_id: done.item.clip.turn_id,
      seq: done.item.clip.seq,
      kind: "sprite",
      audioStart: done.startAt,
      audioEnd: done.endAt,
      hasAudio: true,
      audioBytes: done.item.bytes,
      framesDrawn: done.framesDrawn || 0,
      maxLevel: done.maxLevel || 0,
    });
  }

  function onSpriteEnded(item) {
    if (!current || current.item !== item) return;
    if (preloaded && preloaded.sprite) {
      promote();
      return;
    }
    const done = current;
    current = null;
    finishSprite(done);
    afterClip(item);
  }

  // A clip ended and nothing follows at once: hold the caption for the reply's next sentence,
  // or go idle.
  function afterClip(item) {
    if (!paused && queue.length && isReady(queue[0])) {
      pump();
      return;
    }
    const turn = item.clip.turn_id;
    if (queue.length || (!endedTurns.has(turn) && !cancelledTurns.has(turn))) {
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

  function onPlaying(event) {
    const video = event.target;
    if (!current || current.video !== video || current.started) return;
    current.started = true;
    const item = current.item;
    showClip(item, video);
    began(item, { kind: "video", player: video.id });
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
    const next = !paused && queue.length && isReady(queue[0]) ? queue[0] : null;
    if (next) startNext();
    record("ended", Object.assign({
      t: endedAt,
      clip_id: item.clip.clip_id,
      turn_id: item.clip.turn_id,
      seq: item.clip.seq,
      kind: "video",
      player: video.id,
    }, facts));
    byKey.delete(item.key);
    report(item, "ended");
    if (next) return;
    afterClip(item);
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

  function silence(entry) {
    if (entry.sprite) {
      try {
        entry.source.stop();
      } catch (err) {
        /* not started yet, or already stopped */
      }
      entry.source.disconnect();
    } else {
      unload(entry.video);
    }
  }

  function dropTurn(turnId) {
    cancelledTurns.add(turnId);
    if (preloaded && preloaded.item.clip.turn_id === turnId) {
      silence(preloaded);
      if (preloaded.sprite) dropItem(preloaded.item, "skipped", "");
      preloaded = null;
    }
    if (current && current.item.clip.turn_id === turnId) {
      const { item } = current;
      silence(current);
      current = null;
      dropItem(item, "skipped", "");
      if (preloaded && preloaded.sprite) {
        // It was to start where the skipped clip would have ended: start it now instead.
        silence(preloaded);
        queue.unshift(preloaded.item);
        preloaded = null;
      }
    }
    for (let i = queue.length - 1; i >= 0; i -= 1) {
      if (queue[i].clip.turn_id === turnId) dropItem(queue.splice(i, 1)[0], "skipped", "");
    }
  }

  // ------------------------------------------------------------------ events

  function pcmBuffer(data, rate) {
    const pcm = new Int16Array(data, 0, Math.floor(data.byteLength / 2));
    const buffer = audio.createBuffer(1, pcm.length, rate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i += 1) samples[i] = pcm[i] / 32768;
    return buffer;
  }

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
    const expiresAt = typeof clip.expires_in_ms === "number"
      ? performance.now() + clip.expires_in_ms : null;
    const item = { clip, key, ids: [clip.clip_id], blobUrl: null, buffer: null, error: null, expiresAt };
    byKey.set(key, item);
    queue.push(item);
    record("received", { clip_id: clip.clip_id, turn_id: clip.turn_id, seq: clip.seq });
    const sprite = clip.kind === "sprite";
    if (!sprite && clip.stream && window.MediaSource && MediaSource.isTypeSupported(clip.stream)) {
      // Still being encoded: play it from a Media Source fed as its fragments arrive.
      const source = new MediaSource();
      item.blobUrl = URL.createObjectURL(source);
      source.addEventListener("sourceopen", () => streamInto(source, item), { once: true });
      pump();
      return;
    }
    if (sprite && !audio) {
      item.error = "no Web Audio on this page: sprite clips cannot sound";
      pump();
      return;
    }
    fetch(sprite ? clip.audio_url : clip.url, { cache: "no-store" })
      .then((response) => {
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        return sprite ? response.arrayBuffer() : response.blob();
      })
      .then((body) => {
        if (sprite) {
          item.bytes = body.byteLength;
          item.buffer = pcmBuffer(body, clip.sample_rate);
        } else {
          item.blobUrl = URL.createObjectURL(body);
        }
      })
      .catch((err) => {
        item.error = `fetch failed: ${err.message || err}`;
      })
      .finally(pump);
  }

  function appendTo(buffer, data) {
    return new Promise((resolve, reject) => {
      buffer.addEventListener("updateend", resolve, { once: true });
      buffer.addEventListener("error", () => reject(new Error("append failed")), { once: true });
      buffer.appendBuffer(data);
    });
  }

  // Feeds a streamed clip's fragments into its Media Source as the server sends them; the
  // player it is attached to starts as soon as the first fragment is in.
  async function streamInto(source, item) {
    const clip = item.clip;
    try {
      const buffer = source.addSourceBuffer(clip.stream);
      const response = await fetch(clip.url, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.getReader();
      let pieces = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await appendTo(buffer, value);
        pieces += 1;
        if (pieces === 1) record("stream-first", { clip_id: clip.clip_id });
      }
      if (source.readyState === "open") source.endOfStream();
      record("stream-end", { clip_id: clip.clip_id, pieces });
    } catch (err) {
      record("stream-failed", { clip_id: clip.clip_id, reason: String(err) });
      if (source.readyState === "open") source.endOfStream("network");
    }
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
    // Sprite clips (and their scheduled successors) hold with the audio clock itself.
    if (audio) (paused ? audio.suspend() : audio.resume()).catch(() => {});
    if (!current) {
      if (!paused) pump();
      return;
    }
    if (current.sprite) return;
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
    setPersona(message.persona || null);
    setPaused(Boolean(message.paused));
    record("hello", { instance: message.instance });
  }

  const handlers = {
    hello: onHello,
    persona: (m) => setPersona({ atlas: m.atlas, manifest: m.manifest }),
    clip: onClip,
    turn_started: (m) => record("turn_started", { turn_id: m.turn_id, viewer: m.viewer }),
    turn_ended: (m) => {
      endedTurns.add(m.turn_id);
      record("turn_ended", { turn_id: m.turn_id });
      // Holding the last frame for this reply's next clip? There is none: go idle now.
      if (!current && holdTimer && !queue.length) goIdle();
    },
    skip: (m) => {
      record("skip", { turn_id: m.turn_id, reason: m.reason });
      if (m.turn_id) dropTurn(m.turn_id);
      pump();
      if (!current) goIdle();
    },
    clear: (m) => {
      record("clear", { turn_ids: m.turn_ids });
      for (const turnId of m.turn_ids || []) dropTurn(turnId);
      pump();
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
      persona: Boolean(persona),
      audio: audio ? audio.state : null,
    }),
  };

  // One always-running AudioContext: sprite clips are scheduled on its clock, sample-exact, and
  // the video players' sound is routed through it so that a <video> that starts playing needs
  // no audio output of its own, which in Chromium takes 40-80 ms to open (a gap between
  // sentences). In an ordinary browser tab without autoplay permission the context starts on
  // the first click; the video players then keep their own output, so they are never silenced.
  async function routeAudio() {
    try {
      audio = new AudioContext({ latencyHint: "interactive" });
    } catch (err) {
      record("audio-route", { route: "element" });
      return;
    }
    if (audio.state !== "running") {
      await Promise.race([audio.resume(), new Promise((done) => setTimeout(done, 500))]);
    }
    if (audio.state !== "running") {
      document.addEventListener("click", () => audio.resume().catch(() => {}));
    }
    if (params.get("webaudio") === "0" || audio.state !== "running") {
      record("audio-route", { route: "element", context: audio.state });
      return;
    }
    for (const player of players) {
      audio.createMediaElementSource(player).connect(audio.destination);
    }
    record("audio-route", { route: "webaudio", baseLatency: audio.baseLatency });
  }

  requestAnimationFrame(draw);
  routeAudio().finally(connect);
})();
