// Switchboard calling app: a mesh of RTCPeerConnections (up to 6 people) using the
// perfect-negotiation pattern, on top of the signaling client library.
import { SignalingClient } from './signaling-client.js';

const MAX_PARTICIPANTS = 6;
const $ = (id) => document.getElementById(id);
const nameInput = $('name'), roomInput = $('room'), joinBtn = $('join'), leaveBtn = $('leave');
const micBtn = $('mic'), camBtn = $('cam');
const params = new URLSearchParams(location.search);
// `?relay=1` sends all media through the TURN server (a diagnostic for TURN setups).
const iceTransportPolicy = params.get('relay') === '1' ? 'relay' : 'all';

const TEXT = {
  room_full: 'The room is full. Try another room.',
  forbidden_room: 'Your token does not allow this room.',
  unreachable: 'The server is unreachable. Check your network and try again.',
  token_refused: 'The server refused your sign-in. Reload the page and join again.',
};

let client = null, localStream = null, myId = null, iceServers = [];
const iceErrors = []; // STUN/TURN failures (e.g. 401: TURN credentials refused), for support
const negotiationErrors = []; // failed signaling steps, for support
let reconnects = 0; // signaling reconnects (resumed or not) since joining

function negotiationFailed(id, e) {
  console.warn('signaling with', id, e);
  negotiationErrors.push(`${id}: ${e}`);
}
const peers = new Map(); // peerId -> {pc, polite, makingOffer, ignoreOffer, queue, tile, stream}

roomInput.value = params.get('room') ?? '';
nameInput.value = params.get('name') ?? '';

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// Peer ids are `<name>-<32 hex session id>`; show the name.
const displayName = (peerId) => peerId.replace(/-[0-9a-f]{32}$/, '');

function addTile(label, stream, muted) {
  const tile = document.createElement('figure');
  tile.innerHTML = '<video autoplay playsinline></video><figcaption><span class="who"></span> <span class="state"></span></figcaption>';
  Object.assign(tile.querySelector('video'), { srcObject: stream, muted });
  tile.querySelector('.who').textContent = label;
  $('grid').append(tile);
  return tile;
}

function setTileState(tile, state) {
  tile.dataset.state = state;
  tile.querySelector('.state').textContent = state === 'connected' ? '' : state;
}

// Camera + mic, else mic only, else receive only; says which and why.
async function getMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    $('media').textContent = 'This page needs HTTPS (or localhost) for camera and microphone: receive only.';
    return null;
  }
  let why = '';
  for (const [constraints, note] of [[{ audio: true, video: true }, ''], [{ audio: true }, 'No camera available: audio only.']]) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      $('media').textContent = note;
      return stream;
    } catch (e) {
      why = e.name === 'NotAllowedError' ? 'Camera and microphone permission was denied' : 'No camera or microphone found';
    }
  }
  $('media').textContent = `${why}: you can watch and listen, but not be seen or heard.`;
  return null;
}

function updateMediaButtons() {
  for (const [btn, kind, on, off] of [[micBtn, 'audio', 'Mute', 'Unmute'], [camBtn, 'video', 'Camera off', 'Camera on']]) {
    const track = localStream?.getTracks().find((t) => t.kind === kind);
    btn.disabled = !client || (!track && kind === 'audio');
    btn.textContent = track?.enabled ? on : off;
    btn.setAttribute('aria-pressed', String(!track?.enabled));
  }
}

// `caller`: this side makes the first offer. Only the newcomer calls (everyone already in the
// room waits for its offer), so two offers never cross while a call is being set up; later
// renegotiations that do cross are settled by perfect negotiation.
function createPeer(id, caller = false) {
  if (peers.has(id)) return peers.get(id);
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
  const stream = new MediaStream();
  const p = {
    pc, polite: myId < id, caller, awaitingOffer: !caller, makingOffer: false, ignoreOffer: false, queue: Promise.resolve(), stream,
  };
  p.tile = addTile(displayName(id), stream, false);
  p.tile.dataset.peer = id;
  setTileState(p.tile, 'connecting');
  peers.set(id, p);
  for (const kind of ['audio', 'video']) {
    const track = localStream?.getTracks().find((t) => t.kind === kind);
    if (track) pc.addTrack(track, localStream);
    else pc.addTransceiver(kind, { direction: 'recvonly' });
  }
  pc.ontrack = ({ track }) => {
    stream.addTrack(track);
    p.tile.querySelector('video').srcObject = stream; // reload so a late track starts playing
  };
  pc.onicecandidate = ({ candidate }) => candidate && client?.sendCandidate(id, candidate);
  pc.onicecandidateerror = ({ url, errorCode, errorText }) => iceErrors.push({ peerId: id, url, errorCode, errorText });
  // The caller alone restarts ICE (on failure, or when a negotiation never got going: an
  // offer lost with a dropped socket, say), so the two sides do not restart in step and
  // cross their offers each time. restartIce() makes this side offer again.
  pc.onconnectionstatechange = () => {
    setTileState(p.tile, pc.connectionState);
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
      if (pc.localDescription.type === 'offer') client?.sendOffer(id, pc.localDescription.sdp);
    } catch (e) {
      negotiationFailed(id, e);
    } finally {
      p.makingOffer = false;
    }
  };
  return p;
}

function removePeer(id) {
  const p = peers.get(id);
  clearInterval(p?.watchdog);
  p?.pc.close();
  p?.tile.remove();
  peers.delete(id);
}

// Runs a peer's signaling steps in order, so a candidate never overtakes its description.
function enqueue(id, step, create = false) {
  const p = create ? createPeer(id) : peers.get(id);
  if (p) p.queue = p.queue.then(() => step(p)).catch((e) => negotiationFailed(id, e));
}

// Perfect negotiation: the impolite side ignores a colliding offer, the polite side rolls back.
async function onDescription(p, id, type, sdp) {
  const { pc } = p;
  const collision = type === 'offer' && (p.makingOffer || pc.signalingState !== 'stable');
  p.ignoreOffer = !p.polite && collision;
  if (p.ignoreOffer) return;
  await pc.setRemoteDescription({ type, sdp });
  if (type !== 'offer') return;
  p.awaitingOffer = false;
  await pc.setLocalDescription();
  client?.sendAnswer(id, pc.localDescription.sdp);
}

function useIceServers(list) {
  if (!Array.isArray(list)) return;
  iceServers = list;
  peers.forEach((p) => p.pc.setConfiguration({ iceServers, iceTransportPolicy }));
}

function wire(c) {
  const on = (type, fn) => c.addEventListener(type, (e) => c === client && fn(e.detail));
  on('joined', (m) => {
    myId = m.peerId;
    useIceServers(m.iceServers);
    if (m.peers.length >= MAX_PARTICIPANTS) return leave(true, `This call already has ${MAX_PARTICIPANTS} people, the most it supports.`);
    $('self')?.querySelector('.who').replaceChildren(`${displayName(myId)} (you)`);
    status(`In room “${m.roomId}”. ${m.peers.length ? `${m.peers.length + 1} people here.` : 'Waiting for others: share this page’s address.'}`);
    m.peers.forEach((id) => createPeer(id, true)); // the newcomer calls everyone already here
  });
  on('resumed', (m) => {
    useIceServers(m.iceServers);
    // Calls whose media path survived stay up; peers that left meanwhile go.
    [...peers.keys()].filter((id) => !m.peers.includes(id)).forEach(removePeer);
    status(`Reconnected to room “${m.roomId}”.`);
  });
  on('reconnected', ({ resumed }) => {
    reconnects += 1;
    // The server lost the session: the client joins again; rebuild every connection.
    if (!resumed) [...peers.keys()].forEach(removePeer);
  });
  on('reconnecting', ({ delayMs }) => status(`Connection to the server lost; reconnecting in ${Math.ceil(delayMs / 1000)} s… The call goes on meanwhile.`, true));
  on('goaway', () => status('The server is restarting; moving to another one…'));
  on('peer_joined', (m) => {
    createPeer(m.peerId);
    status(`${displayName(m.peerId)} joined.`);
  });
  on('peer_left', (m) => {
    removePeer(m.peerId);
    status(`${displayName(m.peerId)} left.`);
  });
  on('offer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'offer', m.sdp), true));
  on('answer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'answer', m.sdp)));
  on('ice-candidate', (m) =>
    enqueue(m.peerId, (p) => p.pc.addIceCandidate(m.candidate).catch((e) => p.ignoreOffer || Promise.reject(e))));
  on('error', (m) => {
    if (m.code === 'peer_not_found') return console.info(m.message); // a peer left mid-negotiation
    if (m.code === 'room_full' || m.code === 'forbidden_room') leave(false, TEXT[m.code]);
    else status(TEXT[m.code] ?? m.message, true);
  });
  on('close', ({ reason }) => leave(false, reason));
}

async function join() {
  if (joinBtn.disabled) return;
  const name = nameInput.value.trim(), room = roomInput.value.trim();
  if (!name || !room) return status('Enter a display name and a room.', true);
  history.replaceState(null, '', `?room=${encodeURIComponent(room)}${iceTransportPolicy === 'relay' ? '&relay=1' : ''}`);
  joinBtn.disabled = true;
  try {
    status('Signing in…');
    const grant = await SignalingClient.fetchToken(location.origin, name, room);
    myId = grant.peerId;
    iceServers = grant.iceServers ?? [];
    status('Starting camera and microphone…');
    localStream = await getMedia();
    addTile(`${displayName(myId)} (you)`, localStream, true).id = 'self';
    const renewToken = async () => (await SignalingClient.fetchToken(location.origin, name, room)).token;
    client = new SignalingClient(grant.token, { renewToken });
    wire(client);
    status('Connecting…');
    await client.connect();
    client.join(room);
    leaveBtn.disabled = false;
    updateMediaButtons();
  } catch (e) {
    leave(false, TEXT[e.code] ?? e.message);
  }
}

function leave(sendLeave = true, error = null) {
  const c = client;
  client = null; // from here on, ignore anything the old client reports
  if (sendLeave) c?.leave();
  c?.close();
  [...peers.keys()].forEach(removePeer);
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  joinBtn.disabled = false;
  leaveBtn.disabled = true;
  $('self')?.remove();
  if (!error) $('media').textContent = '';
  updateMediaButtons();
  status(error ?? 'You left the call.', Boolean(error));
}

// Mute and camera toggles keep the tracks (no renegotiation); a camera added later (after an
// audio-only start) is negotiated with every peer.
async function toggle(kind) {
  const track = localStream?.getTracks().find((t) => t.kind === kind);
  if (track) {
    track.enabled = !track.enabled;
  } else if (kind === 'video') {
    try {
      const camera = (await navigator.mediaDevices.getUserMedia({ video: true })).getVideoTracks()[0];
      localStream ??= new MediaStream();
      localStream.addTrack(camera);
      $('self').querySelector('video').srcObject = localStream;
      for (const { pc } of peers.values()) {
        const slot = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
        slot.direction = 'sendrecv';
        await slot.sender.replaceTrack(camera);
        pc.dispatchEvent(new Event('negotiationneeded'));
      }
      $('media').textContent = '';
    } catch {
      $('media').textContent = 'The camera is unavailable or permission was denied.';
    }
  }
  updateMediaButtons();
}

$('form').addEventListener('submit', (e) => (e.preventDefault(), join()));
leaveBtn.addEventListener('click', () => leave());
micBtn.addEventListener('click', () => toggle('audio'));
camBtn.addEventListener('click', () => toggle('video'));
addEventListener('pagehide', () => client && leave()); // tell the room now, not after a timeout
updateMediaButtons();

// For automated checks and support: the state of every peer connection.
window.switchboardCall = {
  get peerId() {
    return myId;
  },
  iceErrors,
  negotiationErrors,
  get reconnects() {
    return reconnects;
  },
  async peers() {
    return Promise.all([...peers].map(async ([peerId, { pc }]) => {
      let framesDecoded = 0;
      const stats = [...(await pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
      const local = stats.find((s) => s.id === pair?.localCandidateId);
      stats.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video').forEach((s) => (framesDecoded += s.framesDecoded ?? 0));
      return {
        peerId, connectionState: pc.connectionState, framesDecoded, localCandidateType: local?.candidateType ?? null,
        signalingState: pc.signalingState,
      };
    }));
  },
};
