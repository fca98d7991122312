// The two WebSocket cards: Chat (bidi) and an upload with live server-side progress. They use
// rpckit's own browser client, served by the bridge at /_rpckit/rpckit-ws.js (no bundler).
import { call } from "/_rpckit/rpckit-ws.js";

const SERVICE = "/examples.streams.v1.StreamsService/";
const CHUNK = 64 * 1024;
const $ = (id) => document.getElementById(id);

function line(list, text, who) {
  const li = document.createElement("li");
  li.className = who;
  li.textContent = text;
  list.append(li);
  li.scrollIntoView({ block: "nearest" });
}

function setupChat() {
  const section = $("chat");
  const log = $("chat-log");
  let chat = null;

  async function open() {
    chat = call(SERVICE + "Chat");
    section.dataset.state = "open";
    $("chat-open").disabled = true;
    $("chat-close").disabled = false;
    $("chat-send").disabled = false;
    try {
      for await (const reply of chat) line(log, reply.text, "server");
      section.dataset.state = "closed";
    } catch (error) {
      section.dataset.state = error.code === "canceled" ? "closed" : "error";
      if (error.code !== "canceled") line(log, error.message, "error");
    } finally {
      chat = null;
      $("chat-open").disabled = false;
      $("chat-close").disabled = true;
      $("chat-send").disabled = true;
    }
  }

  $("chat-open").addEventListener("click", open);
  $("chat-close").addEventListener("click", () => chat?.end());
  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("chat-input").value;
    if (!chat) return;
    $("chat-input").value = "";
    line(log, text, "me");
    await chat.send({ text });
  });
}

function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function setupProgressUpload() {
  const section = $("wsupload");
  const bar = $("wsupload-bar");
  $("wsupload-start").addEventListener("click", async () => {
    const file = $("wsupload-file").files[0];
    if (!file) return;
    section.dataset.state = "running";
    section.dataset.reports = "0";
    $("wsupload-sha256").textContent = "";
    bar.max = file.size;
    bar.value = 0;
    // The example's demo token: examples/streams/run.sh guards both uploads with upload_auth.
    const upload = call(SERVICE + "UploadWithProgress", {
      headers: { authorization: "Bearer demo-token" },
    });
    const sending = (async () => {
      for (let offset = 0; offset < file.size; offset += CHUNK) {
        const chunk = new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer());
        await upload.send({ data: base64(chunk) });
      }
      await upload.end();
    })();
    try {
      for await (const report of upload) {
        const received = Number(report.received ?? 0); // uint64: a string in JSON
        bar.value = received;
        section.dataset.reports = String(Number(section.dataset.reports) + 1);
        section.dataset.received = String(received);
        $("wsupload-status").textContent = `server has ${received} of ${file.size} bytes`;
        if (report.sha256) $("wsupload-sha256").textContent = report.sha256;
      }
      await sending;
      section.dataset.state = "done";
    } catch (error) {
      $("wsupload-status").textContent = error.message;
      section.dataset.state = "error";
    }
  });
}

setupChat();
setupProgressUpload();
document.body.dataset.wsReady = "true";
