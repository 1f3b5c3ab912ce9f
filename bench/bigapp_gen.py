#!/usr/bin/env python3
"""Turns a copy of examples/farm-app into bench/bigapp.sh's large app.

Usage: bigapp_gen.py APP PACKAGES MODULES_PER_PACKAGE [base|large]

- npm workspaces: a root package.json (`workspaces`: apps/web and
  packages/*), PACKAGES generated members `@bigapp/mod-NN` of
  MODULES_PER_PACKAGE modules each (every module imports the one before it,
  so Vite transforms all of them), which apps/web imports and renders;
  apps/web also depends on real npm packages (BIG_NPM_DEPS below). The
  example's own apps/web/package-lock.json goes: `npm install
  --package-lock-only` writes the root one.
- apps/api/requirements.txt: the example's pins plus BIG_WHEELS (unpinned:
  `farm lock` resolves them with pip and pins every wheel in farm.lock).
- `large` (bench/bigapp.sh's BIGAPP_DEPS=large) adds what a large React
  monorepo and its backend also carry: LARGE_NPM_DEPS/LARGE_NPM_DEV_DEPS
  (MUI and Emotion, AWS SDK v3 clients, webpack, Storybook, Testing
  Library, typescript-eslint, …), LARGE_WHEELS and LARGE_DEBIAN_PACKAGES in
  farm.toml: about 1,300 npm packages and 1,500 locked artifacts in all.

Everything generated is deterministic, so reruns give the same tree.
"""

import json
import pathlib
import sys

# Real, widely used frontend dependencies (their transitive closure is what
# farm locks, fetches and lays out in node_modules).
BIG_NPM_DEPS = {
    "lodash-es": "^4.17.21",
    "date-fns": "^4.1.0",
    "rxjs": "^7.8.1",
    "@reduxjs/toolkit": "^2.2.0",
    "react-router-dom": "^7.0.0",
    "zod": "^3.23.0",
}
BIG_NPM_DEV_DEPS = {
    "typescript": "^5.6.0",
    "eslint": "^9.0.0",
    "@babel/core": "^7.26.0",
    "@babel/preset-env": "^7.26.0",
    "jest": "^29.7.0",
    "prettier": "^3.3.0",
}

# BIGAPP_DEPS=large: the rest of a large React monorepo's package.json.
LARGE_NPM_DEPS = {
    "@mui/material": "^7.0.0",
    "@mui/icons-material": "^7.0.0",
    "@emotion/react": "^11.13.0",
    "@emotion/styled": "^11.13.0",
    "@tanstack/react-query": "^5.0.0",
    "axios": "^1.7.0",
    "i18next": "^25.0.0",
    "react-i18next": "^15.0.0",
    "formik": "^2.4.0",
    "yup": "^1.4.0",
    "@aws-sdk/client-s3": "^3.700.0",
    "@aws-sdk/client-dynamodb": "^3.700.0",
    "@aws-sdk/client-sqs": "^3.700.0",
    "@aws-sdk/client-cognito-identity-provider": "^3.700.0",
    "@aws-sdk/lib-storage": "^3.700.0",
    "@aws-sdk/s3-request-presigner": "^3.700.0",
}
LARGE_NPM_DEV_DEPS = {
    "@babel/preset-react": "^7.26.0",
    "@babel/preset-typescript": "^7.26.0",
    "babel-loader": "^9.2.0",
    "webpack": "^5.95.0",
    "webpack-cli": "^5.1.0",
    "webpack-dev-server": "^5.1.0",
    "html-webpack-plugin": "^5.6.0",
    "css-loader": "^7.1.0",
    "style-loader": "^4.0.0",
    "mini-css-extract-plugin": "^2.9.0",
    "terser-webpack-plugin": "^5.3.0",
    "storybook": "^10.0.0",
    "@storybook/react-vite": "^10.0.0",
    "@storybook/addon-docs": "^10.0.0",
    "@storybook/addon-a11y": "^10.0.0",
    "@testing-library/react": "^16.0.0",
    "@testing-library/jest-dom": "^6.6.0",
    "@testing-library/user-event": "^14.5.0",
    "@testing-library/dom": "^10.4.0",
    "jest-environment-jsdom": "^29.7.0",
    "typescript-eslint": "^8.15.0",
    "eslint-plugin-react": "^7.37.0",
    "eslint-plugin-react-hooks": "^5.0.0",
    "eslint-plugin-import": "^2.31.0",
    "eslint-plugin-jsx-a11y": "^6.10.0",
    "@types/react": "^19.0.0",
    "@types/react-dom": "^19.0.0",
    "@types/node": "^22.0.0",
    "@types/jest": "^29.5.0",
    "sass": "^1.80.0",
    "postcss": "^8.4.0",
    "autoprefixer": "^10.4.0",
    "tailwindcss": "^3.4.0",
    "husky": "^9.1.0",
    "lint-staged": "^15.2.0",
}

# A FastAPI backend's usual company: data, storage, HTTP clients, auth, cloud.
BIG_WHEELS = [
    "numpy", "pandas", "scipy", "sqlalchemy", "alembic", "pymongo", "motor",
    "httpx", "requests", "jinja2", "boto3", "cryptography", "pyjwt", "bcrypt",
    "passlib", "orjson", "redis", "rich", "pyyaml", "python-multipart",
    "email-validator", "tenacity", "structlog", "pillow", "regex", "tqdm",
    "attrs", "jsonschema", "python-dotenv", "websockets", "httptools",
    "uvloop", "sentry-sdk", "prometheus-client", "cachetools", "markdown",
]

# BIGAPP_DEPS=large: workers, databases, analytics, cloud SDKs, telemetry.
LARGE_WHEELS = [
    "celery", "aiohttp", "asyncpg", "psycopg2-binary", "pyarrow", "polars",
    "scikit-learn", "matplotlib", "openpyxl", "lxml", "beautifulsoup4",
    "google-cloud-storage", "google-cloud-pubsub", "opentelemetry-sdk",
    "opentelemetry-exporter-otlp", "kubernetes", "stripe", "elasticsearch",
    "openai", "azure-storage-blob", "azure-identity", "faker", "marshmallow",
    "networkx", "sympy",
]

# BIGAPP_DEPS=large: the extra Debian packages such a backend's steps use.
LARGE_DEBIAN_PACKAGES = ["git", "curl", "libpq5"]


def module_source(pkg: int, i: int) -> str:
    prev = f"import {{ m{pkg:02d}_{i - 1:03d} }} from './m{i - 1:03d}.js';\n" if i else ""
    base = f"m{pkg:02d}_{i - 1:03d}(n + 1)" if i else "n"
    return (
        f"{prev}"
        f"// Generated by bench/bigapp_gen.py: module {i} of @bigapp/mod-{pkg:02d}.\n"
        f"const LABEL = 'mod-{pkg:02d}/m{i:03d}';\n"
        f"export function m{pkg:02d}_{i:03d}(n) {{\n"
        f"  const v = {base};\n"
        f"  return typeof v === 'string' ? `${{v}}|${{LABEL}}` : `${{LABEL}}:${{v}}`;\n"
        f"}}\n"
    )


def main() -> None:
    app, packages, modules = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    deps = sys.argv[4] if len(sys.argv) > 4 else "base"
    if deps not in ("base", "large"):
        sys.exit(f"bigapp_gen.py: unknown dependency set {deps!r} (base or large)")
    large = deps == "large"
    (app / "package.json").write_text(
        json.dumps({"name": "bigapp", "private": True, "workspaces": ["apps/web", "packages/*"]}, indent=2) + "\n"
    )
    (app / "apps/web/package-lock.json").unlink(missing_ok=True)
    members = {}
    for p in range(packages):
        d = app / f"packages/mod-{p:02d}"
        (d / "src").mkdir(parents=True, exist_ok=True)
        for i in range(modules):
            (d / f"src/m{i:03d}.js").write_text(module_source(p, i))
        (d / "index.js").write_text(
            f"export {{ m{p:02d}_{modules - 1:03d} as run }} from './src/m{modules - 1:03d}.js';\n"
        )
        (d / "package.json").write_text(
            json.dumps(
                {"name": f"@bigapp/mod-{p:02d}", "version": "0.1.0", "private": True, "type": "module", "main": "index.js"},
                indent=2,
            )
            + "\n"
        )
        members[f"@bigapp/mod-{p:02d}"] = "0.1.0"

    web = app / "apps/web"
    pkg = json.loads((web / "package.json").read_text())
    pkg["dependencies"] = {**pkg["dependencies"], **BIG_NPM_DEPS, **(LARGE_NPM_DEPS if large else {}), **members}
    pkg["devDependencies"] = {**pkg["devDependencies"], **BIG_NPM_DEV_DEPS, **(LARGE_NPM_DEV_DEPS if large else {})}
    (web / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    imports = "".join(f"import {{ run as run{p:02d} }} from '@bigapp/mod-{p:02d}';\n" for p in range(packages))
    calls = ", ".join(f"run{p:02d}" for p in range(packages))
    (web / "src/generated.js").write_text(
        "// Generated by bench/bigapp_gen.py: every workspace member, so Vite bundles them all.\n"
        + imports
        + "import { chunk } from 'lodash-es';\n"
        + "import { formatISO } from 'date-fns';\n"
        + f"export const moduleCount = [{calls}].map((run) => run(0).split('|').length).reduce((a, b) => a + b, 0);\n"
        + "export const groups = chunk([1, 2, 3, 4], 2).length;\n"
        + "export const epoch = formatISO(new Date(0), { representation: 'date' });\n"
    )
    main_jsx = web / "src/main.jsx"
    text = main_jsx.read_text()
    if "generated.js" not in text:
        text = text.replace(
            "import './app.css';\n",
            "import './app.css';\nimport { moduleCount, groups, epoch } from './generated.js';\n\n"
            "document.title += ` (${moduleCount} modules, ${groups} groups, ${epoch})`;\n",
        )
        main_jsx.write_text(text)

    req = app / "apps/api/requirements.txt"
    lines = req.read_text().splitlines()
    have = {l.split("==")[0].strip().lower() for l in lines if l and not l.startswith("#")}
    extra = [w for w in BIG_WHEELS + (LARGE_WHEELS if large else []) if w not in have]
    req.write_text("\n".join(lines + ["# bench/bigapp_gen.py: a larger backend"] + extra) + "\n")

    if large:
        toml = app / "farm.toml"
        text = toml.read_text()
        section = "[toolchains.debian]\n"
        if section not in text or "\npackages = " in text:
            sys.exit(f"bigapp_gen.py: {toml} has no [toolchains.debian] or already sets packages")
        listed = ", ".join(f'"{p}"' for p in LARGE_DEBIAN_PACKAGES)
        toml.write_text(text.replace(section, f"{section}packages = [{listed}]\n", 1))


if __name__ == "__main__":
    main()
