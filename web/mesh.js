// The peer mesh of a call: one RTCPeerConnection to every other participant, negotiated
// with the perfect-negotiation pattern over the signaling client. It never touches the
// page: it reports what happens as events, and the page decides what to show.

/**
 * A call's peer connections.
 *
 * Events (each a CustomEvent with the `detail` described):
 * - `peeradded` `{peerId, stream}`: a connection to `peerId` exists; its tracks arrive in
 *   `stream`.
 * - `track` `{peerId, stream, track}`: a remote camera or microphone track arrived and is now
 *   in `stream`.
 * - `screen` `{peerId, stream}`: the peer's shared screen started (`stream` holds its video)
 *   or stopped (`stream` is null). Which of a peer's streams is its screen, the peer says
 *   (participant metadata): see `setRemoteScreen`.
 * - `quality` `{peerId, rttMs, lossPercent, path}`: every `statsIntervalMs`, how the
 *   connection to `peerId` does (see `quality()`).
 * - `connectionstatechange` `{peerId, state}`: the connection's `connectionState` changed.
 * - `peerremoved` `{peerId}`: the connection was closed and forgotten.
 * - `iceerror` `{peerId, url, errorCode, errorText}`: a STUN or TURN server failed (401: the
 *   TURN credentials were refused).
 * - `negotiationerror` `{peerId, error}`: a signaling step failed.
 */
export class Mesh extends EventTarget {
  /** peerId -> {pc, polite, caller, awaitingOffer, makingOffer, ignoreOffer, queue, stream, watchdog} */
  #peers = new Map();
  #signaling;
  #iceServers;
  #iceTransportPolicy;
  #closed = false;
  /** The screen this side shares: {stream, track}, or null. */
  #screen = null;
  #qualityTimer = 0;
  /** How many RTCPeerConnections this mesh ever created (a kept one counts once). */
  created = 0;

  /**
   * @param {{sendOffer: Function, sendAnswer: Function, sendCandidate: Function}} signaling
   *   Relays descriptions and candidates (a SignalingClient).
   * @param {object} options
   * @param {string} options.peerId This side's peer id: it decides who is polite.
   * @param {MediaStream|null} [options.localStream] What this side sends; null to receive only.
   * @param {RTCIceServer[]} [options.iceServers]
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy]
   * @param {number} [options.statsIntervalMs] How often `quality` events come (0: never).
   */
  constructor(signaling, { peerId, localStream = null, iceServers = [], iceTransportPolicy = 'all', statsIntervalMs = 2000 }) {
    super();
    this.#signaling = signaling;
    this.peerId = peerId;
    /** The stream this side sends (null when it has neither camera nor microphone). */
    this.localStream = localStream;
    this.#iceServers = iceServers;
    this.#iceTransportPolicy = iceTransportPolicy;
    if (statsIntervalMs > 0) this.#qualityTimer = setInterval(() => this.#reportQuality(), statsIntervalMs);
  }

  /** The peers this side has a connection to. @returns {string[]} */
  get peerIds() {
    return [...this.#peers.keys()];
  }

  /**
   * Connects to a peer that was in the room before this side joined: this side makes the
   * first offer. Only the newcomer calls (everyone already in the room waits for its offer),
   * so two offers never cross while a call is being set up; later renegotiations that do
   * cross are settled by perfect negotiation.
   */
  call(peerId) {
    this.#create(peerId, true);
  }

  /** Prepares the connection to a peer that joined after this side; it makes the first offer. */
  expect(peerId) {
    this.#create(peerId, false);
  }

  /**
   * Connects to a peer the server (again) lists in the room, as `call` (`caller`) or `expect`
   * would, but keeps a connection that already exists and still works: after the server lost
   * this side's session (a node restart) the page joins again with the same peer ids, and the
   * media, which never went through the server, must not wait for signaling. Only a
   * connection that failed, closed or never got going is closed and negotiated again.
   * @returns {boolean} whether an existing connection was kept
   */
  connect(peerId, caller) {
    if (this.healthy(peerId)) return true;
    this.remove(peerId);
    this.#create(peerId, caller);
    return false;
  }

  /**
   * Whether the connection to a peer works or is still getting there: `connected`,
   * `connecting`, `disconnected` (ICE may come back; on failure the caller restarts it), or
   * `new` with a negotiation under way or a caller's watchdog that starts one. Not `failed`
   * or `closed`, nor a `new` one waiting for an offer that went with a lost session.
   */
  healthy(peerId) {
    const p = this.#peers.get(peerId);
    if (!p) return false;
    const { connectionState, signalingState } = p.pc;
    if (['connected', 'connecting', 'disconnected'].includes(connectionState)) return true;
    return connectionState === 'new' && (p.caller || p.makingOffer || signalingState !== 'stable');
  }

  /** Closes the connection to a peer and forgets it. */
  remove(peerId) {
    const p = this.#peers.get(peerId);
    if (!p) return;
    clearInterval(p.watchdog);
    p.pc.close();
    this.#peers.delete(peerId);
    this.#emit('peerremoved', { peerId });
  }

  /** Closes every connection. */
  removeAll() {
    this.peerIds.forEach((id) => this.remove(id));
  }

  /** Ends the call: every connection closes and nothing more is sent or reported. */
  close() {
    this.removeAll();
    clearInterval(this.#qualityTimer);
    this.#screen = null;
    this.#closed = true;
  }

  /** Takes a relayed `offer`, `answer` or `ice-candidate` message from the signaling client. */
  receive(message) {
    const { type, peerId } = message;
    if (type === 'offer') this.#enqueue(peerId, (p) => this.#onDescription(p, peerId, 'offer', message.sdp), true);
    else if (type === 'answer') this.#enqueue(peerId, (p) => this.#onDescription(p, peerId, 'answer', message.sdp));
    else if (type === 'ice-candidate') {
      // A candidate of an offer this side ignored (a collision) fails harmlessly.
      this.#enqueue(peerId, (p) => p.pc.addIceCandidate(message.candidate).catch((e) => p.ignoreOffer || Promise.reject(e)));
    }
  }

  /** Uses a fresh STUN/TURN list (TURN credentials expire with the token). */
  setIceServers(list) {
    if (!Array.isArray(list)) return;
    this.#iceServers = list;
    this.#peers.forEach((p) => p.pc.setConfiguration(this.#config()));
  }

  /**
   * Starts sending a track this side did not have when the call began (a camera after an
   * audio-only start), negotiating it with every peer.
   * @param {MediaStreamTrack} track
   */
  async addLocalTrack(track) {
    this.localStream ??= new MediaStream();
    this.localStream.addTrack(track);
    for (const { pc } of this.#peers.values()) {
      const slot = pc.getTransceivers().find((t) => t.receiver.track.kind === track.kind && t.currentDirection !== 'stopped' && t.sender !== this.#screenSender(pc));
      slot.direction = 'sendrecv';
      await slot.sender.replaceTrack(track);
      pc.dispatchEvent(new Event('negotiationneeded'));
    }
  }

  /**
   * Sends `track` instead of `old` (another camera or microphone) on every connection.
   * replaceTrack needs no renegotiation: the call goes on, only the picture or sound changes.
   * @param {MediaStreamTrack} old
   * @param {MediaStreamTrack} track
   */
  async replaceLocalTrack(old, track) {
    this.localStream.removeTrack(old);
    this.localStream.addTrack(track);
    await Promise.all([...this.#peers.values()].flatMap(({ pc }) =>
      pc.getSenders().filter((s) => s.track === old).map((s) => s.replaceTrack(track))));
  }

  /**
   * Shares a screen (the video track of `stream`, from getDisplayMedia) with every peer, and
   * with peers that come later: a send-only transceiver of its own on every connection,
   * negotiated like any other change (perfect negotiation). The others receive it in a
   * stream with `stream.id`; tell them that id (participant metadata) so they know it is the
   * screen. The camera and microphone go on as they were.
   * @param {MediaStream} stream
   */
  shareScreen(stream) {
    this.stopScreen();
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    this.#screen = { stream, track };
    for (const { pc } of this.#peers.values()) this.#sendScreen(pc);
  }

  /** Stops sending the shared screen (the track itself is the caller's to stop). */
  stopScreen() {
    const screen = this.#screen;
    this.#screen = null;
    if (!screen) return;
    for (const { pc } of this.#peers.values()) {
      const t = pc.getTransceivers().find((t) => t.sender.track === screen.track);
      // Stopping the transceiver renegotiates; the m-line can be reused by the next share.
      if (t && t.currentDirection !== 'stopped' && pc.signalingState !== 'closed') t.stop();
    }
  }

  /** Whether this side shares a screen. */
  get sharingScreen() {
    return Boolean(this.#screen);
  }

  /**
   * Says which of a peer's streams is its shared screen (the stream id it announced), or
   * that it shares none (null). Tracks of that stream go to the `screen` event instead of
   * the peer's camera stream, whichever comes first: the announcement or the track.
   * @param {string} peerId
   * @param {string|null} streamId
   */
  setRemoteScreen(peerId, streamId) {
    const p = this.#peers.get(peerId);
    if (!p || p.screenId === streamId) return;
    p.screenId = streamId;
    if (streamId) p.screenIds.add(streamId);
    for (const track of p.remoteTracks.keys()) this.#place(peerId, p, track);
  }

  /**
   * How each connection does, by peer id: `rttMs`, the round-trip time of the candidate
   * pair in use (null until measured); `lossPercent`, the share of audio and video packets
   * lost on the way in since the previous call (null before any arrived); `path`,
   * `'direct'` (host or server-reflexive candidates on both sides), `'relayed'` (through
   * TURN) or null while no pair is selected.
   * @returns {Promise<Map<string, {rttMs: number|null, lossPercent: number|null, path: string|null}>>}
   */
  async quality() {
    const result = new Map();
    await Promise.all([...this.#peers].map(async ([peerId, p]) => {
      const stats = [...(await p.pc.getStats()).values()];
      const byId = (id) => stats.find((s) => s.id === id);
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = byId(transport?.selectedCandidatePairId) ?? stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      const types = [byId(pair?.localCandidateId), byId(pair?.remoteCandidateId)].map((c) => c?.candidateType);
      const path = !pair ? null : types.includes('relay') ? 'relayed' : 'direct';
      const rtt = pair?.currentRoundTripTime ?? (pair?.responsesReceived ? pair.totalRoundTripTime / pair.responsesReceived : undefined);
      let received = 0, lost = 0;
      for (const s of stats) {
        if (s.type === 'inbound-rtp') [received, lost] = [received + (s.packetsReceived ?? 0), lost + Math.max(0, s.packetsLost ?? 0)];
      }
      const [r0, l0] = p.packets;
      p.packets = [received, lost];
      const [dr, dl] = received >= r0 && lost >= l0 ? [received - r0, lost - l0] : [received, lost];
      result.set(peerId, {
        rttMs: rtt === undefined ? null : Math.round(rtt * 1000),
        lossPercent: dr + dl > 0 ? Math.round((1000 * dl) / (dr + dl)) / 10 : null,
        path,
      });
    }));
    return result;
  }

  /**
   * How loud (0..1, WebRTC's own measure) each peer's audio arrives, by peer id, and this
   * side's microphone under `self`; for showing who speaks without an AudioContext per tile.
   */
  async audioLevels() {
    const levels = new Map();
    await Promise.all([...this.#peers].map(async ([peerId, { pc }]) => {
      for (const s of (await pc.getStats()).values()) {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') levels.set(peerId, s.audioLevel ?? 0);
        if (s.type === 'media-source' && s.kind === 'audio') levels.set('self', Math.max(levels.get('self') ?? 0, s.audioLevel ?? 0));
      }
    }));
    return levels;
  }

  /** Each connection's state and media counters, for tests and support. */
  async stats() {
    return Promise.all([...this.#peers].map(async ([peerId, { pc }]) => {
      let framesDecoded = 0;
      const stats = [...(await pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
      const local = stats.find((s) => s.id === pair?.localCandidateId);
      stats.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video').forEach((s) => (framesDecoded += s.framesDecoded ?? 0));
      return {
        peerId, connectionState: pc.connectionState, framesDecoded, localCandidateType: local?.candidateType ?? null,
        signalingState: pc.signalingState, sendingTrackIds: pc.getSenders().map((s) => s.track?.id).filter(Boolean),
      };
    }));
  }

  #screenSender(pc) {
    return this.#screen && pc.getSenders().find((s) => s.track === this.#screen.track);
  }

  #sendScreen(pc) {
    if (!this.#screen || pc.signalingState === 'closed' || this.#screenSender(pc)) return;
    const { track, stream } = this.#screen;
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }

  // Puts a remote track where it belongs: the peer's camera stream, its announced screen
  // stream, or nowhere (a screen it announced once and has since stopped sharing).
  #place(peerId, p, track) {
    const streamId = p.remoteTracks.get(track);
    const gone = track.readyState === 'ended' || streamId === undefined;
    const isScreen = streamId !== null && p.screenIds.has(streamId);
    const inScreen = !gone && isScreen && streamId === p.screenId;
    if (gone || isScreen) p.stream.removeTrack(track);
    else if (!p.stream.getTracks().includes(track)) {
      p.stream.addTrack(track);
      this.#emit('track', { peerId, stream: p.stream, track });
    }
    const had = p.screen?.getTracks().includes(track);
    if (inScreen && !had) {
      // A new MediaStream each time, so that a page shows a restarted share afresh.
      p.screen = new MediaStream([...(p.screen?.getTracks() ?? []), track]);
      this.#emit('screen', { peerId, stream: p.screen });
    } else if (!inScreen && had) {
      p.screen.removeTrack(track);
      if (!p.screen.getVideoTracks().length) {
        p.screen = null;
        this.#emit('screen', { peerId, stream: null });
      }
    }
  }

  async #reportQuality() {
    if (!this.#peers.size) return;
    try {
      const all = await this.quality();
      for (const [peerId, q] of all) if (this.#peers.has(peerId)) this.#emit('quality', { peerId, ...q });
    } catch (e) {
      console.warn('connection stats', e);
    }
  }

  #config() {
    return { iceServers: this.#iceServers, iceTransportPolicy: this.#iceTransportPolicy };
  }

  #emit(type, detail) {
    if (!this.#closed) this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #failed(peerId, error) {
    console.warn('signaling with', peerId, error);
    this.#emit('negotiationerror', { peerId, error });
  }

  // `caller`: this side makes the first offer (see `call`).
  #create(peerId, caller) {
    if (this.#closed) return null;
    if (this.#peers.has(peerId)) return this.#peers.get(peerId);
    const pc = new RTCPeerConnection(this.#config());
    this.created += 1;
    const stream = new MediaStream();
    const p = {
      pc, polite: this.peerId < peerId, caller, awaitingOffer: !caller, makingOffer: false, ignoreOffer: false,
      queue: Promise.resolve(), stream,
      // Remote track -> the id of the stream it came in (null: none); the announced screen.
      remoteTracks: new Map(), screenId: null, screenIds: new Set(), screen: null, packets: [0, 0],
    };
    this.#peers.set(peerId, p);
    for (const kind of ['audio', 'video']) {
      const track = this.localStream?.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTrack(track, this.localStream);
      else pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    this.#sendScreen(pc);
    pc.ontrack = ({ track, streams }) => {
      const remote = streams[0] ?? null;
      p.remoteTracks.set(track, remote?.id ?? null);
      this.#place(peerId, p, track);
      // The sender stopped sending it (a screen share ended): the track leaves its stream,
      // or ends when its transceiver stops.
      const drop = () => {
        if (!p.remoteTracks.has(track)) return;
        p.remoteTracks.delete(track);
        this.#place(peerId, p, track);
      };
      track.addEventListener('ended', drop);
      remote?.addEventListener('removetrack', (e) => e.track === track && drop());
    };
    pc.onicecandidate = ({ candidate }) => candidate && !this.#closed && this.#signaling.sendCandidate(peerId, candidate);
    pc.onicecandidateerror = ({ url, errorCode, errorText }) => this.#emit('iceerror', { peerId, url, errorCode, errorText });
    // The caller alone restarts ICE (on failure, or when a negotiation never got going: an
    // offer lost with a dropped socket, say), so the two sides do not restart in step and
    // cross their offers each time. restartIce() makes this side offer again.
    pc.onconnectionstatechange = () => {
      this.#emit('connectionstatechange', { peerId, state: pc.connectionState });
      if (pc.connectionState === 'failed' && p.caller) pc.restartIce();
    };
    if (caller) {
      p.watchdog = setInterval(() => {
        if (pc.connectionState === 'new' && pc.signalingState === 'stable' && !p.makingOffer) pc.restartIce();
        if (pc.connectionState === 'connected' || pc.connectionState === 'closed') clearInterval(p.watchdog);
      }, 5000);
    }
    pc.onnegotiationneeded = async () => {
      if (p.awaitingOffer) return; // fired again once the first offer is answered, if still needed
      try {
        p.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription.type === 'offer' && !this.#closed) this.#signaling.sendOffer(peerId, pc.localDescription.sdp);
      } catch (e) {
        this.#failed(peerId, e);
      } finally {
        p.makingOffer = false;
      }
    };
    this.#emit('peeradded', { peerId, stream });
    return p;
  }

  // Runs a peer's signaling steps in order, so a candidate never overtakes its description.
  #enqueue(peerId, step, create = false) {
    const p = create ? this.#create(peerId, false) : this.#peers.get(peerId);
    if (p) p.queue = p.queue.then(() => step(p)).catch((e) => this.#failed(peerId, e));
  }

  // Perfect negotiation: the impolite side ignores a colliding offer, the polite side rolls back.
  async #onDescription(p, peerId, type, sdp) {
    const { pc } = p;
    const collision = type === 'offer' && (p.makingOffer || pc.signalingState !== 'stable');
    p.ignoreOffer = !p.polite && collision;
    if (p.ignoreOffer) return;
    await pc.setRemoteDescription({ type, sdp });
    if (type !== 'offer') return;
    p.awaitingOffer = false;
    await pc.setLocalDescription();
    if (!this.#closed) this.#signaling.sendAnswer(peerId, pc.localDescription.sdp);
  }
}
