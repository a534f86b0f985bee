// The peer mesh of a call: one RTCPeerConnection to every other participant, negotiated
// with the perfect-negotiation pattern over the signaling client. It never touches the
// page: it reports what happens as events, and the page decides what to show.

/**
 * A call's peer connections.
 *
 * Events (each a CustomEvent with the `detail` described):
 * - `peeradded` `{peerId, stream}`: a connection to `peerId` exists; its tracks arrive in
 *   `stream`.
 * - `track` `{peerId, stream, track}`: a remote track arrived and is now in `stream`.
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
   */
  constructor(signaling, { peerId, localStream = null, iceServers = [], iceTransportPolicy = 'all' }) {
    super();
    this.#signaling = signaling;
    this.peerId = peerId;
    /** The stream this side sends (null when it has neither camera nor microphone). */
    this.localStream = localStream;
    this.#iceServers = iceServers;
    this.#iceTransportPolicy = iceTransportPolicy;
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
      const slot = pc.getTransceivers().find((t) => t.receiver.track.kind === track.kind);
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
    };
    this.#peers.set(peerId, p);
    for (const kind of ['audio', 'video']) {
      const track = this.localStream?.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTrack(track, this.localStream);
      else pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    pc.ontrack = ({ track }) => {
      stream.addTrack(track);
      this.#emit('track', { peerId, stream, track });
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
