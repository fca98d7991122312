// Generates a TypeScript client with @hey-api/openapi-ts from an OpenAPI document:
//   node heyapi_generate.mjs api.json OUTDIR
//
// Two things stand between hey-api and rpckit's OpenAPI 3.2 document:
//
// - hey-api prints its code with TypeScript's JS API, which TypeScript 7 (this package's
//   tsc, a native binary) no longer has: its `import "typescript"` goes to TypeScript 5.9
//   (the typescript-for-hey-api alias); everything else keeps TypeScript 7.
// - hey-api (0.95 here, 0.99 too: hey-api/hey-api#4332) reads no `itemSchema`. It types an
//   operation's stream from the `schema` of the first media type, and makes an SSE method
//   only when that is text/event-stream. So the document is read as its itemSchema says:
//   a route with a text/event-stream itemSchema gets that media type alone, its `schema`
//   the items' `data` (the itemSchema branch with no `event` constant). Nothing else is
//   changed; without this step the client still builds, with the NDJSON body's type.
import { readFileSync, writeFileSync } from "node:fs";
import { register } from "node:module";

register(
  "data:text/javascript," +
    encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (specifier === "typescript" && (context.parentURL || "").includes("/@hey-api/")) {
    return next("typescript-for-hey-api", context);
  }
  return next(specifier, context);
}`),
  import.meta.url,
);

export function sseItems(document) {
  for (const operations of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(operations)) {
      const ok = operation?.responses?.["200"];
      const sse = ok?.content?.["text/event-stream"];
      const kinds = sse?.itemSchema?.oneOf;
      if (!kinds) continue;
      const item = kinds.find((kind) => !("const" in (kind.properties?.event ?? {})));
      const data = item?.properties?.data?.contentSchema;
      if (data) ok.content = { "text/event-stream": { schema: data } };
    }
  }
  return document;
}

const [input, output] = process.argv.slice(2);
const shimmed = `${output}.input.json`;
writeFileSync(shimmed, JSON.stringify(sseItems(JSON.parse(readFileSync(input, "utf8")))));
const { createClient } = await import("@hey-api/openapi-ts");
await createClient({
  input: shimmed,
  output: { path: output, importFileExtension: ".js" }, // ES modules Node runs as they are
  logs: { level: "warn" },
  plugins: ["@hey-api/client-fetch", "@hey-api/typescript", "@hey-api/sdk"],
});
