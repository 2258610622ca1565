// ESLint for the extension (browser code: service worker, content scripts, extension
// pages) and its unit tests (Node's test runner). `npm run lint`.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", ".venv/", "artifacts/", "agent/", "state/"] },
  js.configs.recommended,
  {
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "always"],
      "no-var": "error",
      "prefer-const": "error",
      "no-implicit-globals": "error",
      "no-shadow": "error",
      "no-throw-literal": "error",
      "no-promise-executor-return": "error",
      "no-self-compare": "error",
      "no-template-curly-in-string": "error",
      "no-unmodified-loop-condition": "error",
      "no-unreachable-loop": "error",
      "require-atomic-updates": "off",
      "no-console": ["error", { allow: ["error", "warn"] }],
      strict: ["error", "safe"],
    },
  },
  {
    files: ["extension/**/*.js"],
    languageOptions: {
      ecmaVersion: 2025,
      sourceType: "module",
      globals: { ...globals.browser, ...globals.webextensions },
    },
  },
  {
    // Content scripts are classic scripts (the manifest cannot load modules there).
    files: ["extension/content/**/*.js"],
    languageOptions: { sourceType: "script" },
  },
  {
    // The e2e tier's Single Window stand-in: page scripts in the official library's
    // own style (ES5 `var`, a classic script), on purpose.
    files: ["tests/e2e/singlewindow/**/*.js"],
    languageOptions: { sourceType: "script", globals: { ...globals.browser } },
    rules: { "no-var": "off" },
  },
  {
    // The practice Single Window's page scripts (practice/static).
    files: ["practice/static/**/*.js"],
    languageOptions: { ecmaVersion: 2025, sourceType: "module", globals: { ...globals.browser } },
  },
  {
    files: ["tests/js/**/*.js", "eslint.config.js"],
    languageOptions: { ecmaVersion: 2025, sourceType: "module", globals: { ...globals.node } },
  },
];
