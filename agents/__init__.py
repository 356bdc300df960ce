"""Designer and Reflector agents, chat-model loading and the LLM cache."""
