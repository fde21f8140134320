/**
 * The dashboard page: `GET /observability` (HTML), `/observability/assets/dashboard.js` and
 * `/observability/assets/dashboard.css`, read from `src/http/dashboard/` once and served as they are — no
 * build step, no CDN, nothing loaded from elsewhere (the Content-Security-Policy says so to the browser).
 * The page carries no secret: it asks for the API token when the API answers 401 (docs/observability.md).
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import type { FastifyPluginAsync, FastifyReply } from "fastify"
import type { AppOptions } from "./App.ts"

const assetDir = fileURLToPath(new URL("./dashboard/", import.meta.url))
const read = (name: string) => readFileSync(`${assetDir}${name}`, "utf8")

const escapeHtml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;")

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join("; ")

export const dashboardRoutes = (options: AppOptions): FastifyPluginAsync => async (app) => {
  const html = read("index.html").replaceAll("{{title}}", escapeHtml(options.config.dashboardName))
  const js = read("dashboard.js")
  const css = read("dashboard.css")

  const send = (reply: FastifyReply, type: string, body: string) =>
    reply
      .header("content-type", type)
      .header("cache-control", "no-cache")
      .header("x-content-type-options", "nosniff")
      .send(body)

  const page = (_request: unknown, reply: FastifyReply) =>
    send(reply.header("content-security-policy", CSP).header("referrer-policy", "no-referrer"), "text/html; charset=utf-8", html)
  app.get("/observability", page)
  app.get("/observability/", page)
  app.get("/observability/assets/dashboard.js", (_request, reply) => send(reply, "text/javascript; charset=utf-8", js))
  app.get("/observability/assets/dashboard.css", (_request, reply) => send(reply, "text/css; charset=utf-8", css))
}
