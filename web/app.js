// Switchboard demo page: a mesh of RTCPeerConnections using the perfect-negotiation pattern.
import { SignalingClient } from './signaling-client.js';

const $ = (id) => document.getElementById(id);
const nameInput = $('name'), roomInput = $('room'), joinBtn = $('join'), leaveBtn = $('leave');
const grid = $('grid'), statusLine = $('status'), mediaNote = $('media');

const ERRORS = {
  room_full: 'The room is full. Try another room.',
  forbidden_room: 'Your token does not allow this room.',
  rate_limited: 'Too many messages; slow down.',
  unavailable: 'The server is busy; try again shortly.',
};
const RETRY_CODES = new Set([1001, 1006, 1011, 1012, 4001, 4003]); // 4001: needs a fresh token
const CLOSE_TEXT = {
  1000: 'The server ended the session.',
  1008: 'The server closed the connection (access revoked).',
  1009: 'A message was too big for the server.',
  4004: 'This session was opened in another tab or window.',
};

let client = null, localStream = null, myId = null, iceServers = [], retries = 0, retryTimer = 0;
const peers = new Map(); // peerId -> {pc, polite, makingOffer, ignoreOffer, queue, tile, stream}

roomInput.value = new URLSearchParams(location.search).get('room') ?? '';
nameInput.value = localStorage.getItem('switchboard.name') ?? '';

function status(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

function addTile(id, label, stream, muted) {
  const tile = document.createElement('figure');
  tile.className = 'tile';
  tile.dataset.id = id;
  const video = Object.assign(document.createElement('video'), { autoplay: true, playsInline: true, muted });
  video.srcObject = stream;
  const caption = document.createElement('figcaption');
  caption.textContent = label;
  tile.append(video, caption);
  grid.append(tile);
  return tile;
}

async function getMedia() {
  if (!navigator.mediaDevices) {
    mediaNote.textContent = 'Camera and microphone need HTTPS (or localhost): receive only.';
    return null;
  }
  for (const constraints of [{ audio: true, video: true }, { audio: true }]) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      if (!constraints.video) mediaNote.textContent = 'Camera denied or missing: audio only.';
      return stream;
    } catch (e) {
      console.warn('getUserMedia', constraints, e);
    }
  }
  mediaNote.textContent = 'Camera and microphone denied or missing: receive only.';
  return null;
}

function createPeer(id) {
  if (peers.has(id)) return peers.get(id);
  const pc = new RTCPeerConnection({ iceServers });
  const stream = new MediaStream();
  const p = { pc, polite: myId < id, makingOffer: false, ignoreOffer: false, queue: Promise.resolve(), stream };
  p.tile = addTile(id, id, stream, false);
  peers.set(id, p);
  for (const kind of ['audio', 'video']) {
    const track = localStream?.getTracks().find((t) => t.kind === kind);
    if (track) pc.addTrack(track, localStream);
    else pc.addTransceiver(kind, { direction: 'recvonly' });
  }
  pc.ontrack = ({ track }) => {
    stream.addTrack(track);
    p.tile.querySelector('video').srcObject = stream; // reload so late tracks start playing
  };
  pc.onicecandidate = ({ candidate }) => candidate && client?.sendCandidate(id, candidate);
  pc.oniceconnectionstatechange = () => pc.iceConnectionState === 'failed' && pc.restartIce();
  pc.onnegotiationneeded = async () => {
    try {
      p.makingOffer = true;
      await pc.setLocalDescription();
      if (pc.localDescription.type === 'offer') client?.sendOffer(id, pc.localDescription.sdp);
    } catch (e) {
      console.warn('negotiation with', id, e);
    } finally {
      p.makingOffer = false;
    }
  };
  return p;
}

function removePeer(id) {
  const p = peers.get(id);
  if (!p) return;
  p.pc.close();
  p.tile.remove();
  peers.delete(id);
}

// Run a peer's signaling steps one after another so a candidate never overtakes its description.
function enqueue(id, step, create = false) {
  const p = create ? createPeer(id) : peers.get(id);
  if (!p) return;
  p.queue = p.queue.then(() => step(p)).catch((e) => console.warn('signaling with', id, e));
}

async function onDescription(p, id, type, sdp) {
  const { pc } = p;
  const collision = type === 'offer' && (p.makingOffer || pc.signalingState !== 'stable');
  p.ignoreOffer = !p.polite && collision;
  if (p.ignoreOffer) return;
  if (collision && pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
  await pc.setRemoteDescription({ type, sdp: typeof sdp === 'string' ? sdp : sdp.sdp });
  if (type === 'offer') {
    await pc.setLocalDescription();
    client?.sendAnswer(id, pc.localDescription.sdp);
  }
}

function wire(c) {
  const on = (type, fn) => c.addEventListener(type, (e) => c === client && fn(e.detail));
  on('joined', (m) => {
    retries = 0;
    myId = m.peerId;
    iceServers = Array.isArray(m.iceServers) ? m.iceServers : [];
    $('self')?.querySelector('figcaption').replaceChildren(`${myId} (you)`);
    status(`In room “${m.roomId}” as ${myId}. ${m.peers.length} other(s) here.`);
    m.peers.forEach(createPeer);
  });
  on('peer_joined', (m) => createPeer(m.peerId));
  on('peer_left', (m) => removePeer(m.peerId));
  on('offer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'offer', m.sdp), true));
  on('answer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'answer', m.sdp)));
  on('ice-candidate', (m) =>
    enqueue(m.peerId, (p) => p.pc.addIceCandidate(m.candidate).catch((e) => p.ignoreOffer || Promise.reject(e))));
  on('error', (m) => {
    if (m.code === 'peer_not_found') return console.info(m.message); // a peer left mid-negotiation
    status(ERRORS[m.code] ?? m.message, true);
    if (m.code === 'room_full' || m.code === 'forbidden_room') leave(false, ERRORS[m.code]);
  });
  on('close', ({ code, reason }) => onClose(code, reason));
}

function onClose(code, reason = '') {
  [...peers.keys()].forEach(removePeer);
  if (!RETRY_CODES.has(code)) return leave(false, CLOSE_TEXT[code] ?? `Disconnected: ${reason || 'code ' + code}.`);
  const delay = Math.min(30000, 1000 * 2 ** retries++) * (0.5 + Math.random() / 2);
  status(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s…`, true);
  retryTimer = setTimeout(() => reconnect(code === 4001), delay);
}

async function reconnect(freshToken) {
  try {
    if (freshToken) client.token = (await SignalingClient.fetchToken(location.origin, nameInput.value, roomInput.value)).token;
    await client.connect();
    client.join(roomInput.value);
  } catch (e) {
    onClose(e.code === 'token_refused' ? 4001 : 1006);
  }
}

async function join() {
  const name = nameInput.value.trim(), room = roomInput.value.trim();
  if (!name || !room) return status('Enter a display name and a room.', true);
  localStorage.setItem('switchboard.name', name);
  history.replaceState(null, '', `?room=${encodeURIComponent(room)}`);
  joinBtn.disabled = true;
  try {
    status('Getting a token…');
    const { token, peerId } = await SignalingClient.fetchToken(location.origin, name, room);
    myId = peerId;
    status('Starting camera and microphone…');
    localStream = await getMedia();
    const tile = addTile('self', `${myId} (you)`, localStream, true);
    tile.id = 'self';
    client = new SignalingClient(token);
    wire(client);
    status('Connecting…');
    await client.connect();
    client.join(room);
    leaveBtn.disabled = false;
  } catch (e) {
    leave(false, e.message);
  }
}

function leave(sendLeave = true, error = null) {
  clearTimeout(retryTimer);
  if (client) {
    if (sendLeave) client.leave();
    const c = client;
    client = null;
    c.close();
  }
  [...peers.keys()].forEach(removePeer);
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  $('self')?.remove();
  retries = 0;
  joinBtn.disabled = false;
  leaveBtn.disabled = true;
  mediaNote.textContent = '';
  status(error ?? 'Left the room.', Boolean(error));
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  join();
});
leaveBtn.addEventListener('click', () => leave());
addEventListener('pagehide', () => client?.close());
