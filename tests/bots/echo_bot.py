"""A bot for process-level tests: echoes text; "slow N" sleeps N seconds first."""

import asyncio

from ilinkbot import Bot, filters

bot = Bot()


@bot.message(filters.startswith("slow "))
async def slow(msg, ctx):
    await asyncio.sleep(float(msg.text.split()[1]))
    await msg.reply(f"done {msg.text}")


@bot.message(filters.text)
async def echo(msg, ctx):
    await msg.reply(f"echo: {msg.text}")
