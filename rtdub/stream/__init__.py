"""Live streaming: sessions, scheduling, dub sources and the WebRTC front ends."""
