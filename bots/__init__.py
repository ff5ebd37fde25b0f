"""Platform adapters (Twitch, Discord, console): each turns platform events into utterances."""
