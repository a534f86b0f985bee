// Switchboard demo page: a mesh of RTCPeerConnections using the perfect-negotiation pattern.
import { SignalingClient } from './signaling-client.js';

const $ = (id) => document.getElementById(id);
const nameInput = $('name'), roomInput = $('room'), joinBtn = $('join'), leaveBtn = $('leave');

// Server error codes and WebSocket close codes, in plain words.
const TEXT = {
  room_full: 'The room is full. Try another room.',
  forbidden_room: 'Your token does not allow this room.',
  1000: 'The server ended the session.',
  1008: 'The server closed the connection (access revoked).',
  1009: 'A message was too big for the server.',
  4004: 'This session was opened in another tab or window.',
};
const RETRY_CODES = new Set([1001, 1006, 1011, 1012, 4001, 4003]); // 4001 also needs a fresh token

let client = null, localStream = null, myId = null, iceServers = [], retries = 0, retryTimer = 0;
const peers = new Map(); // peerId -> {pc, polite, makingOffer, ignoreOffer, queue, tile}

roomInput.value = new URLSearchParams(location.search).get('room') ?? '';

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function addTile(label, stream, muted) {
  const tile = document.createElement('figure');
  tile.innerHTML = '<video autoplay playsinline></video><figcaption></figcaption>';
  Object.assign(tile.firstChild, { srcObject: stream, muted });
  tile.lastChild.textContent = label;
  $('grid').append(tile);
  return tile;
}

// Camera + mic, else mic only, else receive only (denied, no device, or not HTTPS); says which.
async function getMedia() {
  for (const [constraints, note] of [[{ audio: true, video: true }, ''], [{ audio: true }, 'No camera: audio only.']]) {
    const stream = await navigator.mediaDevices?.getUserMedia(constraints).catch((e) => console.warn(e));
    $('media').textContent = note;
    if (stream) return stream;
  }
  $('media').textContent = 'Camera and microphone unavailable or denied: receive only.';
  return null;
}

function createPeer(id) {
  if (peers.has(id)) return peers.get(id);
  const pc = new RTCPeerConnection({ iceServers });
  const stream = new MediaStream();
  const p = { pc, polite: myId < id, makingOffer: false, ignoreOffer: false, queue: Promise.resolve() };
  p.tile = addTile(id, stream, false);
  peers.set(id, p);
  for (const kind of ['audio', 'video']) {
    const track = localStream?.getTracks().find((t) => t.kind === kind);
    if (track) pc.addTrack(track, localStream);
    else pc.addTransceiver(kind, { direction: 'recvonly' });
  }
  pc.ontrack = ({ track }) => {
    stream.addTrack(track);
    p.tile.firstChild.srcObject = stream; // reload so a late track starts playing
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
  peers.get(id)?.pc.close();
  peers.get(id)?.tile.remove();
  peers.delete(id);
}

// Runs a peer's signaling steps in order, so a candidate never overtakes its description.
function enqueue(id, step, create = false) {
  const p = create ? createPeer(id) : peers.get(id);
  if (p) p.queue = p.queue.then(() => step(p)).catch((e) => console.warn('signaling with', id, e));
}

async function onDescription(p, id, type, sdp) {
  const { pc } = p;
  const collision = type === 'offer' && (p.makingOffer || pc.signalingState !== 'stable');
  p.ignoreOffer = !p.polite && collision; // the impolite side ignores a colliding offer
  if (p.ignoreOffer) return;
  if (collision && pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
  await pc.setRemoteDescription({ type, sdp: typeof sdp === 'string' ? sdp : sdp.sdp });
  if (type !== 'offer') return;
  await pc.setLocalDescription();
  client?.sendAnswer(id, pc.localDescription.sdp);
}

function wire(c) {
  const on = (type, fn) => c.addEventListener(type, (e) => c === client && fn(e.detail));
  on('joined', (m) => {
    [retries, myId, iceServers] = [0, m.peerId, Array.isArray(m.iceServers) ? m.iceServers : []];
    if (iceServers.length) peers.forEach((p) => p.pc.setConfiguration({ iceServers })); // early offers
    $('self')?.lastChild.replaceChildren(`${myId} (you)`);
    status(`In room “${m.roomId}” as ${myId}; ${m.peers.length} other(s) here.`);
    m.peers.forEach((id) => createPeer(id));
  });
  on('peer_joined', (m) => createPeer(m.peerId));
  on('peer_left', (m) => removePeer(m.peerId));
  on('offer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'offer', m.sdp), true));
  on('answer', (m) => enqueue(m.peerId, (p) => onDescription(p, m.peerId, 'answer', m.sdp)));
  on('ice-candidate', (m) =>
    enqueue(m.peerId, (p) => p.pc.addIceCandidate(m.candidate).catch((e) => p.ignoreOffer || Promise.reject(e))));
  on('error', (m) => {
    if (m.code === 'peer_not_found') return console.info(m.message); // a peer left mid-negotiation
    if (m.code === 'room_full' || m.code === 'forbidden_room') leave(false, TEXT[m.code]);
    else status(TEXT[m.code] ?? m.message, true);
  });
  on('close', ({ code, reason }) => onClose(code, reason));
}

// Reconnects (then rejoins, rebuilding every peer connection) for transient closes; else stops.
function onClose(code, reason = '') {
  [...peers.keys()].forEach(removePeer);
  if (!RETRY_CODES.has(code)) return leave(false, TEXT[code] ?? `Disconnected: ${reason || 'code ' + code}.`);
  const delay = Math.min(30000, 1000 * 2 ** retries++) * (0.5 + Math.random() / 2);
  status(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s…`, true);
  retryTimer = setTimeout(() => reconnect(client, code === 4001), delay);
}

async function reconnect(c, freshToken) {
  try {
    if (freshToken) ({ token: c.token, peerId: myId } = await SignalingClient.fetchToken(c.baseUrl, c.userId, c.roomId));
    await c.connect();
    c.join(c.roomId);
  } catch (e) {
    if (c === client) onClose(e.code === 'token_refused' ? 4001 : 1006);
  }
}

async function join() {
  if (joinBtn.disabled) return;
  const name = nameInput.value.trim(), room = roomInput.value.trim();
  if (!name || !room) return status('Enter a display name and a room.', true);
  history.replaceState(null, '', `?room=${encodeURIComponent(room)}`);
  joinBtn.disabled = true;
  try {
    status('Getting a token…');
    const { token, peerId } = await SignalingClient.fetchToken(location.origin, name, room);
    myId = peerId;
    status('Starting camera and microphone…');
    localStream = await getMedia();
    addTile(`${myId} (you)`, localStream, true).id = 'self';
    client = Object.assign(new SignalingClient(token), { userId: name });
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
  const c = client;
  client = null; // from here on, ignore anything the old client reports
  if (sendLeave) c?.leave();
  c?.close();
  [...peers.keys()].forEach(removePeer);
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  retries = 0;
  joinBtn.disabled = false;
  leaveBtn.disabled = true;
  $('self')?.remove();
  if (!error) $('media').textContent = '';
  status(error ?? 'Left the room.', Boolean(error));
}

$('form').addEventListener('submit', (e) => (e.preventDefault(), join()));
leaveBtn.addEventListener('click', () => leave());
addEventListener('pagehide', () => client && leave()); // tell the room now, not after a timeout
