// The FARM framework's own config for this app: what `farm dev` runs and
// which AI providers the app talks to. farm (the build tool) does not run
// this file; `farm init` reads its literal values to write farm.toml, whose
// pins are what release builds use.
import { defineConfig } from '@farm-framework/core';

export default defineConfig({
  name: 'farm-app',
  version: '0.1.0',
  description: 'Notes API with a React frontend and one local Ollama model',
  template: 'basic',
  features: ['ai'],

  apps: {
    web: 'apps/web',
    api: 'apps/api',
  },

  database: {
    type: 'mongodb',
    url: process.env.DATABASE_URL || 'mongodb://localhost:27017/farm-app',
  },

  ai: {
    providers: {
      // Local models during development and in the Ollama image farm builds.
      ollama: {
        enabled: true,
        url: process.env.FARM_OLLAMA_URL ?? 'http://localhost:11434',
        models: ['farm-tiny:latest'],
        defaultModel: 'farm-tiny:latest',
        autoStart: true,
        autoPull: ['farm-tiny:latest'],
        gpu: false,
      },
      // Off here; the key is read from the environment and never written anywhere.
      openai: {
        enabled: false,
        apiKey: process.env.OPENAI_API_KEY,
        models: ['gpt-4o-mini'],
        defaultModel: 'gpt-4o-mini',
      },
    },
    routing: {
      development: 'ollama',
      production: 'ollama',
    },
    features: {
      streaming: true,
      caching: false,
      fallback: true,
    },
  },

  development: {
    ports: {
      frontend: 5173,
      backend: 8000,
      ai: 11434,
    },
    hotReload: {
      enabled: true,
      typeGeneration: true,
    },
  },

  build: {
    target: 'es2022',
    sourcemap: false,
    minify: true,
    outDir: 'dist',
  },
});
