// A devicehub webhook receiver: Node.js standard library only.
//
//     WHSEC=whsec_... node webhook_receiver.js 8000
//
// Checks Devicehub-Signature over the exact body, refuses a signature older
// than five minutes, and remembers event ids (a delivery may come twice).
const crypto = require("node:crypto");
const http = require("node:http");

const secret = process.env.WHSEC;
const toleranceSeconds = 300;
const seen = new Set();

function verify(header, body) {
  const parts = Object.fromEntries(
    (header || "").split(",").map((p) => p.split("=", 2)).filter((p) => p.length === 2));
  const t = parts.t || "";
  const v1 = Buffer.from(parts.v1 || "", "utf8");
  if (!/^\d+$/.test(t) || Math.abs(Date.now() / 1000 - Number(t)) > toleranceSeconds) {
    return false;
  }
  const expected = Buffer.from(
    crypto.createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex"), "utf8");
  return expected.length === v1.length && crypto.timingSafeEqual(expected, v1);
}

http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks); // the exact bytes that were signed
    if (req.method !== "POST" || !verify(req.headers["devicehub-signature"], body)) {
      res.writeHead(400).end();
      return;
    }
    const event = JSON.parse(body);
    if (!seen.has(event.id)) { // at least once: skip a repeat
      seen.add(event.id);
      console.log(event.type, event.deviceId, JSON.stringify(event.data.previousAttributes));
    }
    res.writeHead(204).end(); // any 2xx within 10 s: delivered
  });
}).listen(Number(process.argv[2]), "127.0.0.1");
