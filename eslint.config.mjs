// ESLint (`npm run lint`, with Prettier's check): typescript-eslint's type-checked recommended
// rules on every TypeScript file, formatting left to Prettier (eslint-config-prettier).
import js from "@eslint/js";
import prettier from "eslint-config-prettier";
import tseslint from "typescript-eslint";

export default tseslint.config(
  // Generated (checked current by `npm run proto:check`) or built; this file and other plain JS.
  { ignores: ["node_modules/", "dist/", "data/", "proto/gen/", "**/*.js", "**/*.cjs", "**/*.mjs"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      // An async method that implements a Promise-returning interface (a search engine, a payment
      // platform, a Moleculer lifecycle handler) keeps `async` without an await: it turns a throw
      // into a rejection, which is what its callers handle.
      "@typescript-eslint/require-await": "off",
      // `_name` for what a signature or a destructuring must name but does not use; a rest
      // sibling is how an object loses fields (`{ secret: _, ...rest }`).
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_", ignoreRestSiblings: true },
      ],
    },
  },
  {
    // Tests and benchmarks read JSON answers and driver rows as `any` and check their shape with
    // assertions at run time: there the assertion is the type check, and typing every answer
    // first would add nothing the assertion does not already prove.
    files: ["**/*.spec.ts", "test/**/*.ts", "bench/**/*.ts"],
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
  prettier,
);
